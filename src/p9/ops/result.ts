// What a handler returns: a reply message, a pre-encoded reply frame (Rread built in place; the session
// stamps the tag), or SUPPRESS for a request that ends without any reply (a parked lock cancelled by Tflush).

import type { RMessage } from '../messages.js';

export const SUPPRESS: unique symbol = Symbol('no reply');
export type OpResult = RMessage | Buffer | typeof SUPPRESS;
