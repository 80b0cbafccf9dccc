// Runtime options on the shim's stdin: containerd 2.3 BootstrapParams first (recognised by instance_id ==
// -id), else a bare google.protobuf.Any (runtimeoptions.v1.Options -> config_path TOML, or inline body).
import { readFileSync } from 'node:fs';
import { fromBinary } from '@bufbuild/protobuf';
import { AnySchema, type Any } from '@bufbuild/protobuf/wkt';
import { parse as parseToml } from 'smol-toml';
import { BootstrapParamsSchema, type BootstrapParams } from '../gen/containerd/runtime/bootstrap/v1/bootstrap_pb.js';
import { OptionsSchema } from '../gen/runtimeoptions/v1/api_pb.js';

export interface RuntimeConfig {
  /** Sandbox backend: 'process' (development, unisolated) or 'qemu' (not built yet). */
  sandbox?: string;
  [key: string]: unknown;
}

export interface DecodedOptions {
  bootstrap?: BootstrapParams;
  options?: Any;
  config: RuntimeConfig;
}

export function decodeStdinOptions(data: Uint8Array, id: string): DecodedOptions {
  if (data.length === 0) return { config: {} };
  let options: Any | undefined;
  let bootstrap: BootstrapParams | undefined;
  try {
    const b = fromBinary(BootstrapParamsSchema, data);
    if (b.instanceId === id && id !== '') {
      bootstrap = b;
      options = b.extensions.find((e) => e.value)?.value;
    }
  } catch {
    // not BootstrapParams
  }
  if (!bootstrap) {
    try {
      options = fromBinary(AnySchema, data);
    } catch {
      options = undefined;
    }
  }
  return { bootstrap, options, config: configFromOptions(options) };
}

export function configFromOptions(any: Any | undefined): RuntimeConfig {
  if (!any || any.value.length === 0) return {};
  if (!/runtimeoptions\.v1\.Options$/.test(any.typeUrl)) return {};
  const o = fromBinary(OptionsSchema, any.value);
  let body = o.configBody;
  if (!body && o.configPath) body = readFileSync(o.configPath, 'utf8');
  if (!body) return {};
  return parseToml(body) as RuntimeConfig;
}

/** Backend from the environment (LCOW_SANDBOX) or the TOML; never a default. */
export function sandboxBackend(config: RuntimeConfig, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = env.LCOW_SANDBOX?.trim();
  if (fromEnv) return fromEnv;
  return typeof config.sandbox === 'string' ? config.sandbox : undefined;
}
