// Facts about host processes read from /proc.
import { readFile } from 'node:fs/promises';

/**
 * Field 22 of /proc/<pid>/stat (start time in clock ticks since boot): with the pid it identifies one process
 * incarnation, so a recorded pid is never signalled after the kernel reused it. Undefined when the pid is gone.
 */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Resident set size of a process in bytes (VmRSS), or undefined when the pid is gone. */
export async function processRssBytes(pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return undefined;
  }
}

/**
 * Proportional set size in bytes (/proc/<pid>/smaps_rollup): pages shared with other processes (a UVM clone's
 * template RAM, shared libraries) count divided by the number of sharers. Undefined when the pid is gone.
 */
export async function processPssBytes(pid: number): Promise<number | undefined> {
  try {
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
    const m = /^Pss:\s+(\d+) kB/m.exec(rollup);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return undefined;
  }
}

/**
 * Unique set size: the pages only this process maps (Private_Clean + Private_Dirty from smaps_rollup), what one
 * more such process costs the host; the node binary's text, shared by every Node process, is not in it.
 */
export async function processPrivateBytes(pid: number): Promise<number | undefined> {
  try {
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
    let kb = 0;
    for (const m of rollup.matchAll(/^Private_(?:Clean|Dirty):\s+(\d+) kB/gm)) kb += Number(m[1]);
    return kb * 1024;
  } catch {
    return undefined;
  }
}
