// Suites that need root, containerd, QEMU or diod skip on a developer machine that lacks them, saying why;
// in CI (CI=true, where `make test` installed everything first) a missing prerequisite is a failure, so a
// broken setup can never pass as a green run of skipped suites.

export function requirePrerequisite(ctx: Mocha.Context, missing: string | undefined): void {
  if (missing === undefined) return;
  if (process.env.CI) throw new Error(`prerequisite missing in CI: ${missing}`);
  process.stderr.write(`skipping "${ctx.test?.parent?.fullTitle() ?? ''}": ${missing}\n`);
  ctx.skip();
}
