// Placeholder until the 9P server lands: `lcowctl 9p` reports that it is not built yet.
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('lcowctl 9p: the 9P server is not built yet\n');
  return 1;
}
