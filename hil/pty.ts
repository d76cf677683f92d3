// Virtual serial cable for the HIL rig: the socat pty pair lives with the host transports
// (host-tools/transports/pty-pair.ts, which `qkt demo` uses too); the tests import it from here.
export { createPtyPair, socatAvailable, socatSkipReason } from '../host-tools/transports/pty-pair.js';
export type { PtyPair } from '../host-tools/transports/pty-pair.js';
