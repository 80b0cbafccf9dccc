// Local OCI test images (no registry needed), packed as one gzip layer in an OCI image layout tar, cached on
// disk by content hash, and imported with `ctr image import`:
//  - busybox: Debian's busybox-static with applet symlinks (the workload image of every test);
//  - pause: hack/pause/pause.c compiled static (the CRI sandbox image, `sandbox_image` of the CRI tests).
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, symlink, copyFile, chmod, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

const execFileP = promisify(execFile);

export const BUSYBOX = '/bin/busybox';
export const TEST_IMAGE = 'localhost/lcow-test/busybox:latest';
export const APPLETS = [
  'sh',
  'echo',
  'cat',
  'sleep',
  'true',
  'false',
  'uname',
  'ps',
  'ls',
  'id',
  'env',
  'head',
  'wc',
  'stty',
  'kill',
  'mount',
  'hostname',
  'dd',
  'seq',
  'tr',
  'grep',
  'yes',
  'test',
  'httpd',
  'nc',
  'wget',
  'awk',
  'ip',
  'cut',
  'free',
  'rm',
  'mkdir',
];
const DIRS = ['bin', 'dev', 'etc', 'proc', 'sys', 'tmp', 'root', 'run', 'var'];
const BUILDER_VERSION = '1';

/** A plain directory rootfs (for runc-level tests). */
export async function buildBusyboxRootfs(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  for (const d of DIRS) await mkdir(join(dir, d), { recursive: true });
  await copyFile(BUSYBOX, join(dir, 'bin/busybox'));
  await chmod(join(dir, 'bin/busybox'), 0o755);
  for (const a of APPLETS) await symlink('busybox', join(dir, 'bin', a));
}

// ---- tar (ustar) ----

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function tarHeader(name: string, type: '0' | '2' | '5', size: number, mode: number, linkname = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode, 8), 100);
  h.write(octal(0, 8), 108);
  h.write(octal(0, 8), 116);
  h.write(octal(size, 12), 124);
  h.write(octal(0, 12), 136);
  h.write('        ', 148);
  h.write(type, 156);
  h.write(linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148);
  return h;
}

class TarWriter {
  private parts: Buffer[] = [];
  dir(name: string): void {
    this.parts.push(tarHeader(name.endsWith('/') ? name : name + '/', '5', 0, 0o755));
  }
  file(name: string, data: Buffer, mode = 0o644): void {
    this.parts.push(tarHeader(name, '0', data.length, mode), data);
    const pad = (512 - (data.length % 512)) % 512;
    if (pad) this.parts.push(Buffer.alloc(pad));
  }
  symlink(name: string, target: string): void {
    this.parts.push(tarHeader(name, '2', 0, 0o777, target));
  }
  finish(): Buffer {
    return Buffer.concat([...this.parts, Buffer.alloc(1024)]);
  }
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface ImageContent {
  name: string;
  /** Cache key material (the builder's inputs). */
  key: Buffer;
  layer: (t: TarWriter) => void;
  config: Record<string, unknown>;
}

/** Builds (or reuses) an OCI layout tar of one layer; returns its path. */
function buildOciArchive(img: ImageContent, cacheDir: string): string {
  const key = sha(Buffer.concat([img.key, Buffer.from(BUILDER_VERSION + img.name)])).slice(0, 16);
  const out = join(cacheDir, `${img.name.replace(/[^a-z0-9]+/gi, '_')}-${key}.tar`);
  if (existsSync(out)) return out;
  mkdirSync(cacheDir, { recursive: true });
  const layer = new TarWriter();
  img.layer(layer);
  const layerTar = layer.finish();
  const layerGz = gzipSync(layerTar, { level: 6 });
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: img.config,
      rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layerTar)}`] },
      history: [{ created_by: 'lcow test image builder' }],
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: `sha256:${sha(config)}`,
        size: config.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: `sha256:${sha(layerGz)}`,
          size: layerGz.length,
        },
      ],
    }),
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${sha(manifest)}`,
          size: manifest.length,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: {
            'io.containerd.image.name': img.name,
            'org.opencontainers.image.ref.name': img.name.slice(img.name.lastIndexOf(':') + 1),
          },
        },
      ],
    }),
  );
  const archive = new TarWriter();
  archive.file('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  archive.dir('blobs');
  archive.dir('blobs/sha256');
  for (const blob of [config, manifest, layerGz]) archive.file(`blobs/sha256/${sha(blob)}`, blob);
  archive.file('index.json', index);
  writeFileSync(out + '.tmp', archive.finish());
  writeFileSync(out, readFileSync(out + '.tmp'));
  return out;
}

const CACHE_DIR = '/var/tmp/lcow-test-images';

/** A file added to the busybox image: its path in the image, content and mode. */
interface ExtraFile {
  path: string;
  data: Buffer;
  mode: number;
}

/** The busybox image (and variants with `extra` files); returns the OCI layout tar's path. */
function buildBusyboxArchive(name: string, extra: ExtraFile[], cacheDir: string): string {
  const bb = readFileSync(BUSYBOX);
  return buildOciArchive(
    {
      name,
      key: Buffer.concat([bb, Buffer.from(APPLETS.join(',')), ...extra.flatMap((e) => [Buffer.from(e.path), e.data])]),
      layer: (layer) => {
        const dirs = new Set(DIRS);
        for (const d of DIRS) layer.dir(d);
        for (const e of extra) {
          const parts = e.path.split('/');
          for (let i = 1; i < parts.length; i++) {
            const d = parts.slice(0, i).join('/');
            if (!dirs.has(d)) {
              dirs.add(d);
              layer.dir(d);
            }
          }
        }
        for (const e of extra) layer.file(e.path, e.data, e.mode);
        layer.file('bin/busybox', bb, 0o755);
        for (const a of APPLETS) layer.symlink(`bin/${a}`, 'busybox');
        layer.file('etc/passwd', Buffer.from('root:x:0:0:root:/root:/bin/sh\n'));
        layer.file('etc/group', Buffer.from('root:x:0:\n'));
      },
      config: { Env: ['PATH=/bin'], Cmd: ['sh'], WorkingDir: '/' },
    },
    cacheDir,
  );
}

/** Builds (or reuses) the busybox image's OCI layout tar; returns its path. */
export function buildImageArchive(cacheDir = CACHE_DIR): string {
  return buildBusyboxArchive(TEST_IMAGE, [], cacheDir);
}

export const INOTIFY_IMAGE = 'localhost/lcow-test/inotify:latest';

/**
 * The busybox image plus Debian's inotifywait (package inotify-tools) with the shared libraries it loads, copied
 * from this host (`ldd`): a real inotify client in a container, built without a registry.
 */
export async function importInotifyImage(address: string, ns = 'default', ctrBin = 'ctr'): Promise<string> {
  const bin = '/usr/bin/inotifywait';
  const { stdout } = await execFileP('ldd', [bin]);
  const libs = [...stdout.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1]!);
  const extra: ExtraFile[] = [{ path: 'bin/inotifywait', data: readFileSync(bin), mode: 0o755 }];
  for (const lib of new Set(libs)) extra.push({ path: lib.slice(1), data: readFileSync(lib), mode: 0o755 });
  const archive = buildBusyboxArchive(INOTIFY_IMAGE, extra, CACHE_DIR);
  await execFileP(ctrBin, ['--address', address, '--namespace', ns, 'images', 'import', archive]);
  return INOTIFY_IMAGE;
}

export const PAUSE_IMAGE = 'localhost/lcow-test/pause:1';
const PAUSE_SOURCE = resolve(dirname(fileURLToPath(import.meta.url)), '../../../hack/pause/pause.c');

/** Builds (or reuses) the pause image (hack/pause/pause.c, gcc -static); returns the archive's path. */
export function buildPauseArchive(cacheDir = CACHE_DIR): string {
  const src = readFileSync(PAUSE_SOURCE);
  mkdirSync(cacheDir, { recursive: true });
  const bin = join(cacheDir, `pause-${sha(src).slice(0, 16)}`);
  if (!existsSync(bin)) {
    execFileSync('gcc', ['-static', '-Os', '-s', '-o', `${bin}.tmp`, PAUSE_SOURCE]);
    writeFileSync(bin, readFileSync(`${bin}.tmp`), { mode: 0o755 });
  }
  const pause = readFileSync(bin);
  return buildOciArchive(
    {
      name: PAUSE_IMAGE,
      key: pause,
      layer: (layer) => {
        for (const d of ['dev', 'etc', 'proc', 'sys']) layer.dir(d);
        layer.file('pause', pause, 0o755);
      },
      config: { Entrypoint: ['/pause'], WorkingDir: '/', User: '65535:65535' },
    },
    cacheDir,
  );
}

/** Imports the pause image into a containerd reachable at `address` (namespace `ns`). */
export async function importPauseImage(address: string, ns: string, ctrBin = 'ctr'): Promise<string> {
  await execFileP(ctrBin, ['--address', address, '--namespace', ns, 'images', 'import', buildPauseArchive()]);
  return PAUSE_IMAGE;
}

/** Imports the test image into a containerd reachable at `address` (namespace `ns`). */
export async function importTestImage(address: string, ns = 'default', ctrBin = 'ctr'): Promise<string> {
  const archive = buildImageArchive();
  await execFileP(ctrBin, ['--address', address, '--namespace', ns, 'images', 'import', archive]);
  return TEST_IMAGE;
}
