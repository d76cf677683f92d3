// The fuzzer's seed corpus: one valid request (header fields and CBOR payload) for every command
// the terminal module serves, and some it does not. Nothing here authenticates: the INJECT BEGIN
// carries a well-formed sealed batch header whose tag was made under a key the module does not
// hold, and the ADMIN requests a token that does not verify. The mutations start from these.
import { Group, SystemCmd, DiagCmd, InjectCmd, KeysCmd, AdminCmd } from '../../firmware/link/groups.js';
import { sealBatch, parseSealedHeader } from '../../firmware/crypto/batch.js';
import { Prng } from './prng.js';
import { item } from './cbor.js';
import type { Item } from './cbor.js';

export interface Seed {
  name: string;
  group: number;
  command: number;
  payload: Item;
}

/** A sealed header + tag for `terminalId`, sealed under a key derived from `seed` (never the module's). */
export function forgedBatchHead(terminalId: string, seed: number, seq = 1, bits = 8192): Uint8Array {
  const r = new Prng(seed, 0xbad);
  const sealed = sealBatch({
    deviceKey: r.bytes(32),
    header: { batchId: r.bytes(16), terminalId, seq, purpose: 'any', bits, chunkSize: 1024, createdAt: 1_700_000_000_000 },
    keys: r.bytes(bits / 8),
  });
  const info = parseSealedHeader(sealed);
  return Uint8Array.from([...info.headerBytes, ...info.tag]);
}

/**
 * The seeds for a module whose terminal id is `terminalId`. `admin` false leaves out the ADMIN
 * requests with a well-formed token: the module counts each in flash by design (docs/protocol.md
 * 3.10), so a run that checks "flash unchanged" sends them only in its own phase.
 */
export function seedCorpus(o: { terminalId: string; seed: number; admin?: boolean }): Seed[] {
  const r = new Prng(o.seed, 0xc0);
  const s = (name: string, group: number, command: number, payload: Record<string, unknown>): Seed => ({ name, group, command, payload: item(payload) });
  const seeds: Seed[] = [
    s('system params', Group.SYSTEM, SystemCmd.PARAMS, { versions: [1] }),
    s('system params (empty)', Group.SYSTEM, SystemCmd.PARAMS, {}),
    s('system status', Group.SYSTEM, SystemCmd.STATUS, {}),
    s('system audit log', Group.SYSTEM, SystemCmd.AUDIT_LOG, { from: 0, max: 32 }),
    s('diag echo', Group.DIAG, DiagCmd.ECHO, { d: r.bytes(24) }),
    s('diag sink begin', Group.DIAG, DiagCmd.SINK_BEGIN, { n: 4096 }),
    s('diag sink chunk', Group.DIAG, DiagCmd.SINK_CHUNK, { t: 1, o: 0, d: r.bytes(64) }),
    s('diag sink status', Group.DIAG, DiagCmd.SINK_STATUS, { t: 1 }),
    s('inject begin (forged, this terminal)', Group.INJECT, InjectCmd.BEGIN, { h: forgedBatchHead(o.terminalId, o.seed) }),
    s('inject begin (forged, other terminal)', Group.INJECT, InjectCmd.BEGIN, { h: forgedBatchHead('OTHER-TERMINAL', o.seed + 1, 7) }),
    s('inject chunk', Group.INJECT, InjectCmd.CHUNK, { t: 1, o: 0, d: r.bytes(1040) }),
    s('inject commit', Group.INJECT, InjectCmd.COMMIT, { t: 1 }),
    s('inject status', Group.INJECT, InjectCmd.STATUS, { t: 1 }),
    s('inject abort', Group.INJECT, InjectCmd.ABORT, { t: 1 }),
    s('keys negotiate otp', Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp' }),
    s('keys negotiate aead', Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'aead', enc: 'any', auth: 'any', rekeyMessages: 16, rekeyMs: 60000 }),
    s('keys seal', Group.KEYS, KeysCmd.SEAL, { s: 1, d: r.bytes(32) }),
    s('keys open', Group.KEYS, KeysCmd.OPEN, { s: 1, m: r.bytes(96) }),
    s('keys close', Group.KEYS, KeysCmd.CLOSE, { s: 1 }),
    s('unknown command (system 9)', Group.SYSTEM, 9, {}),
    s('unknown command (inject 200)', Group.INJECT, 200, { t: 1 }),
    s('unknown group 5 (download)', Group.DOWNLOAD, 0, { carrier: 'C1' }),
    s('unknown group 6 (station)', Group.STATION, 2, {}),
    s('unknown group 200', 200, 0, {}),
  ];
  // A malformed token (not a byte string) never reaches the token check: no flash write.
  seeds.push(s('admin zeroize (token not bytes)', Group.ADMIN, AdminCmd.ZEROIZE, { token: 'not-a-token' }));
  if (o.admin) {
    seeds.push(s('admin zeroize (wrong token)', Group.ADMIN, AdminCmd.ZEROIZE, { token: r.bytes(80) }));
    seeds.push(s('admin factory reset (wrong token)', Group.ADMIN, AdminCmd.FACTORY_RESET, { token: r.bytes(80) }));
  }
  return seeds;
}
