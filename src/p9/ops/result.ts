// What a handler returns: a reply message, a pre-encoded reply frame with its own buffer (the session stamps the
// tag), REPLIED when a synchronous handler encoded its reply in the session's arena, or SUPPRESS for a request
// that ends without any reply (a parked lock cancelled by Tflush).

import type { RMessage } from '../messages.js';

export const SUPPRESS: unique symbol = Symbol('no reply');
/** A synchronous handler built its reply in the session's reply arena (Session.beginReply / endReply). */
export const REPLIED: unique symbol = Symbol('reply built in place');
export type OpResult = RMessage | Buffer | typeof SUPPRESS | typeof REPLIED;
