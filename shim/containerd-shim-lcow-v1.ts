#!/usr/bin/env node
// containerd-shim-lcow-v1: the shim v2 binary containerd starts for runtime_type io.containerd.lcow.v1.
// Placeholder until the binary contract lands; fails loudly so containerd reports a clear error.
process.stderr.write('containerd-shim-lcow-v1: the shim binary contract is not built yet\n');
process.exitCode = 1;
