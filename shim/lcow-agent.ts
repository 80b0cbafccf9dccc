#!/usr/bin/env node
// lcow-agent: the guest agent. Inside the UVM it serves the shim over the VM transport; with the
// development `process` sandbox backend it runs as a host process (own mount namespace) on a unix socket.
import { main } from '../src/agent/main.js';

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`lcow-agent: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
