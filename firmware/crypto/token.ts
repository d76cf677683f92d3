// Admin tokens (docs/batch.md, "Admin token"): the KMD's authorization for a destructive command
// (zeroize, factory reset), HMAC-SHA256 (RFC 2104) under the admin key. Replay protection is the
// module's: it accepts a token only if counter > the last accepted counter it keeps in flash.
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { deriveAdminKey } from './kdf.js';
import { CryptoFormatError } from './errors.js';
import { DEVICE_KEY_BYTES, TERMINAL_ID_RE, abytes, aint, aoneOf, aterminalId, ascii, concat, ctEqual, fromAscii, u32be, u8, wipe } from './_util.js';
export { CryptoFormatError } from './errors.js';

export const TOKEN_MAGIC = 'QKTA';
export const TOKEN_VERSION = 1;
export const TOKEN_MAC_BYTES = 32;
const FIXED = 11; // magic 4, version 1, command 1, counter 4, id length 1

export type AdminCommand = 'zeroize' | 'factory-reset';
export const ADMIN_COMMANDS: readonly AdminCommand[] = ['zeroize', 'factory-reset'];
const COMMAND_CODE: Record<AdminCommand, number> = { zeroize: 1, 'factory-reset': 2 };

export interface AdminTokenFields {
  terminalId: string;
  command: AdminCommand;
  /** 1..2^32-1; 0 is the module's initial "last accepted" value, so no token carries it. */
  counter: number;
}

function encodeBody(f: AdminTokenFields): Uint8Array {
  if (f === null || typeof f !== 'object') throw new TypeError('token fields must be an object');
  aterminalId(f.terminalId, 'terminalId');
  aoneOf(f.command, 'command', ADMIN_COMMANDS);
  aint(f.counter, 'counter', 1, 0xffffffff);
  const tid = ascii(f.terminalId);
  return concat(ascii(TOKEN_MAGIC), u8(TOKEN_VERSION), u8(COMMAND_CODE[f.command]), u32be(f.counter), u8(tid.length), tid);
}

function tokenMac(deviceKey: Uint8Array, body: Uint8Array): Uint8Array {
  const key = deriveAdminKey(deviceKey);
  try {
    return hmac(sha256, key, body);
  } finally {
    wipe(key);
  }
}

/** KMD side: the token bytes (body then MAC) the field tool passes to the module. */
export function makeAdminToken(deviceKey: Uint8Array, fields: AdminTokenFields): Uint8Array {
  abytes(deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
  const body = encodeBody(fields);
  return concat(body, tokenMac(deviceKey, body));
}

/** Read a token's fields without verifying it (display only; never act on this). */
export function decodeAdminToken(token: Uint8Array): AdminTokenFields {
  abytes(token, 'token');
  if (token.length < FIXED + 1 + TOKEN_MAC_BYTES) throw new CryptoFormatError('admin token truncated');
  if (fromAscii(token.subarray(0, 4)) !== TOKEN_MAGIC) throw new CryptoFormatError('not a qkt admin token');
  if (token[4] !== TOKEN_VERSION) throw new CryptoFormatError(`admin token version ${token[4]} not supported`);
  const n = token[FIXED - 1]!;
  if (token.length !== FIXED + n + TOKEN_MAC_BYTES) throw new CryptoFormatError('admin token length does not match its id length');
  const command = ADMIN_COMMANDS.find((c) => COMMAND_CODE[c] === token[5]);
  if (!command) throw new CryptoFormatError(`admin command code ${token[5]} unknown`);
  const counter = new DataView(token.buffer, token.byteOffset, token.byteLength).getUint32(6, false);
  if (counter === 0) throw new CryptoFormatError('admin token counter 0 is never issued');
  const terminalId = fromAscii(token.subarray(FIXED, FIXED + n));
  if (!TERMINAL_ID_RE.test(terminalId)) throw new CryptoFormatError('admin token terminal id malformed');
  return { terminalId, command, counter };
}

export type AdminTokenCheck = { ok: true; counter: number } | { ok: false; reason: string };

/**
 * Module side: is `token` a genuine `expect.command` for `expect.terminalId`? The MAC is checked
 * in constant time before any field is trusted. On ok, the module must still require
 * counter > its last accepted counter, then store counter before executing the command.
 */
export function verifyAdminToken(deviceKey: Uint8Array, token: Uint8Array, expect: { terminalId: string; command: AdminCommand }): AdminTokenCheck {
  abytes(deviceKey, 'deviceKey', DEVICE_KEY_BYTES);
  abytes(token, 'token');
  aterminalId(expect?.terminalId, 'expect.terminalId');
  aoneOf(expect.command, 'expect.command', ADMIN_COMMANDS);
  let fields: AdminTokenFields;
  try {
    fields = decodeAdminToken(token);
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  const body = token.subarray(0, token.length - TOKEN_MAC_BYTES);
  if (!ctEqual(tokenMac(deviceKey, body), token.subarray(token.length - TOKEN_MAC_BYTES))) {
    return { ok: false, reason: 'admin token MAC does not verify' };
  }
  if (fields.terminalId !== expect.terminalId) return { ok: false, reason: 'admin token is for another terminal' };
  if (fields.command !== expect.command) return { ok: false, reason: 'admin token is for another command' };
  return { ok: true, counter: fields.counter };
}
