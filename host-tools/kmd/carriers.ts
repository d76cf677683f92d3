// Carriers enrolled at the KMD for its download interface: each has an id and a random 256-bit
// authentication key, kept in the KMD home and on the carrier itself (auth.key, mode 0600). A
// carrier proves it holds the key by an HMAC over the KMD's fresh challenge.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { writeFileAtomic } from '../fs-atomic.js';
import { Carrier } from '../carrier/carrier.js';
import { checkId, isId, KmdError } from './home.js';
import type { KmdHome } from './home.js';

export const CARRIER_KEY_FILE = 'auth.key';
const LABEL = new TextEncoder().encode('qkt carrier auth v1');

/** Holds the home's lock while the carrier record is checked and written. */
export function enrollCarrier(home: KmdHome, carrierId: string, dir: string): { carrierId: string; dir: string } {
  checkId('carrier', carrierId);
  return home.lockedSync(() => enrollLocked(home, carrierId, dir));
}

function enrollLocked(home: KmdHome, carrierId: string, dir: string): { carrierId: string; dir: string } {
  const rec = home.path('carriers', `${carrierId}.json`);
  if (existsSync(rec)) throw new KmdError(`carrier ${carrierId} is already enrolled at this KMD`, 'ALREADY_ENROLLED');
  const carrier = Carrier.init(dir, { carrierId, kmdId: home.config.kmdId });
  const key = randomBytes(32);
  try {
    writeFileAtomic(join(carrier.path, CARRIER_KEY_FILE), key.toString('hex') + '\n', 0o600);
    writeFileAtomic(rec, JSON.stringify({ carrierId, key: key.toString('hex'), enrolledAt: home.nowIso() }, null, 2) + '\n');
  } finally {
    key.fill(0);
  }
  return { carrierId, dir: carrier.path };
}

/** The KMD's copy of a carrier's key, or undefined for a carrier it does not know. */
export function carrierKey(home: KmdHome, carrierId: string): Uint8Array | undefined {
  const rec = home.path('carriers', `${carrierId}.json`);
  if (!isId(carrierId) || !existsSync(rec)) return undefined;
  return new Uint8Array(Buffer.from((JSON.parse(readFileSync(rec, 'utf8')) as { key: string }).key, 'hex'));
}

/** The carrier's own copy (read from the carrier folder). */
export function readCarrierKey(dir: string): Uint8Array {
  const f = join(dir, CARRIER_KEY_FILE);
  if (!existsSync(f)) throw new KmdError(`${dir} holds no carrier key: enrol it at the KMD with qkt kmd carrier add --home H --carrier ID --dir ${dir}`, 'NOT_ENROLLED');
  return new Uint8Array(Buffer.from(readFileSync(f, 'utf8').trim(), 'hex'));
}

export function carrierProof(key: Uint8Array, kmdId: string, carrierId: string, challenge: Uint8Array): Uint8Array {
  const enc = new TextEncoder();
  return hmac(sha256, key, new Uint8Array([...LABEL, 0, ...enc.encode(kmdId), 0, ...enc.encode(carrierId), 0, ...challenge]));
}
