// The key store behind the KMD's ETSI GS QKD 014 API: draws fresh key material from the key supply
// for a master SAE, keeps the slave's copy (persisted, crash-safe) until the slave fetches it, then
// forgets it. Validation and limits of the API live here; errors are typed with their HTTP status.
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../fs-atomic.js';
import { SupplyExhaustedError, type KeySupply } from './supply.js';

/** SAE IDs: what may stand in a certificate CN, a URL path segment and a file name unescaped. */
export const SAE_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

/** Whether `id` is a valid SAE ID ("." and ".." match the pattern but are no file name or path segment). */
export function isSaeId(id: unknown): id is string {
  return typeof id === 'string' && SAE_ID_PATTERN.test(id) && id !== '.' && id !== '..';
}

/** File name of the pending-key store in a KMD home. */
export const SAE_KEYS_FILE = 'sae-keys.json';

/** The limits advertised in the Status object (ETSI GS QKD 014 §6.1), all in bits or counts. */
export interface SaeStoreLimits {
  /** Default key size in bits (Status `key_size`; Key request `size` default, §6.2). */
  keySize: number;
  minKeySize: number;
  maxKeySize: number;
  maxKeyPerRequest: number;
  /** Additional slave SAEs per request. Always 0: multicast key delivery is not supported. */
  maxSaeIdCount: 0;
}

export const DEFAULT_LIMITS: Readonly<SaeStoreLimits> = Object.freeze({
  keySize: 256,
  minKeySize: 64,
  maxKeySize: 1024,
  maxKeyPerRequest: 128,
  maxSaeIdCount: 0,
});

export interface SaeStoreOptions {
  /** The JSON file of pending keys, normally `<home>/sae-keys.json`. Created on first write. */
  path: string;
  supply: KeySupply;
  /** The most key material the supply buffers; `max_key_count` = capacityBits / key_size. Default 2^30 (FixedRateSupply's default). */
  capacityBits?: number;
  limits?: Partial<Omit<SaeStoreLimits, 'maxSaeIdCount'>>;
  /** Which SAE IDs the KMD knows (e.g. `id => hasSaeCert(pkiDir, id)`). Default: every valid ID. */
  knownSae?: (saeId: string) => boolean;
}

/** An API error with the HTTP status it maps to (ETSI GS QKD 014 §5.2–5.4) and the Error object fields (§6.5). */
export class KeyDeliveryError extends Error {
  constructor(
    readonly status: 400 | 401 | 503,
    message: string,
    readonly details?: Record<string, unknown>[],
  ) {
    super(message);
    this.name = 'KeyDeliveryError';
  }
}

/** The Status counts (§6.1) for one master/slave pair; the API layer adds the KME and SAE IDs. */
export interface StatusCounts {
  key_size: number;
  stored_key_count: number;
  max_key_count: number;
  max_key_per_request: number;
  max_key_size: number;
  min_key_size: number;
  max_SAE_ID_count: number;
}

export interface DeliveredKey {
  keyId: string;
  /** The key bytes; the caller should zero-fill them once encoded. */
  key: Uint8Array;
}

export interface KeyRequestParams {
  number?: number | undefined;
  size?: number | undefined;
  additionalSlaveSaeIds?: string[] | undefined;
}

interface PendingKey {
  keyId: string;
  master: string;
  slave: string;
  size: number;
  key: Uint8Array;
  /** Where the bits sit in the supply's output stream: for audit, never reused. */
  supplyOffset: number;
  issuedAt: string;
}

interface StoreFile {
  version: 1;
  pending: Array<Omit<PendingKey, 'key'> & { key: string }>;
}

/** Messages fixed by the spec's examples, so clients can match them. */
export const MSG_SIZE_NOT_MULTIPLE_OF_8 = 'size shall be a multiple of 8'; // §6.2 / §6.5 example
export const MSG_KEYS_NOT_FOUND = 'one or more keys specified are not found on KME'; // §5.4 / §6.5 example
export const MSG_UNAUTHORIZED = 'unauthorized';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class SaeStore {
  readonly limits: Readonly<SaeStoreLimits>;
  private readonly capacityBits: number;
  private readonly pending = new Map<string, PendingKey>();
  private readonly knownSae: (saeId: string) => boolean;

  constructor(private readonly o: SaeStoreOptions) {
    const l = { ...DEFAULT_LIMITS, ...(o.limits ?? {}), maxSaeIdCount: 0 as const };
    for (const [name, v] of Object.entries(l)) {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`limits.${name} must be a non-negative integer, got ${v}`);
    }
    for (const name of ['keySize', 'minKeySize', 'maxKeySize'] as const) {
      if (l[name] < 8 || l[name] % 8 !== 0) throw new RangeError(`limits.${name} must be a positive multiple of 8, got ${l[name]}`);
    }
    if (!(l.minKeySize <= l.keySize && l.keySize <= l.maxKeySize)) throw new RangeError('limits: need minKeySize <= keySize <= maxKeySize');
    if (l.maxKeyPerRequest < 1) throw new RangeError('limits.maxKeyPerRequest must be at least 1');
    this.limits = Object.freeze(l);
    this.capacityBits = o.capacityBits ?? 2 ** 30;
    if (!Number.isSafeInteger(this.capacityBits) || this.capacityBits < 0) throw new RangeError(`capacityBits must be a non-negative integer, got ${o.capacityBits}`);
    this.knownSae = o.knownSae ?? (() => true);
    this.load();
  }

  /** Status counts for master → slave (ETSI GS QKD 014 §5.2, §6.1). */
  status(master: string, slave: string): StatusCounts {
    this.checkPair(master, slave);
    const l = this.limits;
    const maxKeyCount = Math.floor(this.capacityBits / l.keySize);
    return {
      key_size: l.keySize,
      // Keys of the default size the supply can serve right now.
      stored_key_count: Math.min(maxKeyCount, Math.floor(this.o.supply.availableBits() / l.keySize)),
      max_key_count: maxKeyCount,
      max_key_per_request: l.maxKeyPerRequest,
      max_key_size: l.maxKeySize,
      min_key_size: l.minKeySize,
      max_SAE_ID_count: l.maxSaeIdCount,
    };
  }

  /**
   * Get key (ETSI GS QKD 014 §5.3): `number` fresh keys of `size` bits for `master` to share with
   * `slave`. All or nothing: the bits are taken from the supply in one piece. The master's copy
   * is returned and not kept; the slave's copy is persisted before this returns.
   */
  issue(master: string, slave: string, req: KeyRequestParams = {}): DeliveredKey[] {
    this.checkPair(master, slave);
    const l = this.limits;
    const number = req.number ?? 1; // §6.2: number defaults to 1
    const size = req.size ?? l.keySize; // §6.2: size defaults to key_size of the Status
    if (!Number.isSafeInteger(number) || number < 1) throw new KeyDeliveryError(400, 'number shall be a positive integer');
    if (number > l.maxKeyPerRequest) throw new KeyDeliveryError(400, `number shall not exceed max_key_per_request (${l.maxKeyPerRequest})`);
    if (!Number.isSafeInteger(size) || size < 1) throw new KeyDeliveryError(400, 'size shall be a positive integer');
    if (size % 8 !== 0) throw new KeyDeliveryError(400, MSG_SIZE_NOT_MULTIPLE_OF_8);
    if (size < l.minKeySize || size > l.maxKeySize) throw new KeyDeliveryError(400, `size shall be between min_key_size (${l.minKeySize}) and max_key_size (${l.maxKeySize})`);
    // §6.2 additional_slave_SAE_IDs: this KME advertises max_SAE_ID_count 0 (§6.1).
    if (req.additionalSlaveSaeIds !== undefined && req.additionalSlaveSaeIds.length > l.maxSaeIdCount) {
      throw new KeyDeliveryError(400, 'additional_slave_SAE_IDs is not supported by this KME (max_SAE_ID_count is 0)');
    }

    const bits = number * size;
    let supplied;
    try {
      supplied = this.o.supply.take(bits, `sae ${master}->${slave}`);
    } catch (e) {
      // A well-formed request this KME cannot serve now: "Error of server side" (§5.3 Table 6, 503).
      if (e instanceof SupplyExhaustedError) throw new KeyDeliveryError(503, `keys are being exhausted: ${number} key(s) of ${size} bits requested, ${Math.floor(e.availableBits / size)} available`);
      throw e;
    }
    const issuedAt = new Date().toISOString();
    const bytes = size / 8;
    const issued: PendingKey[] = [];
    for (let i = 0; i < number; i++) {
      // §6.3: key_ID is a UUID (random, RFC 4122 version 4).
      let keyId = randomUUID();
      while (this.pending.has(keyId)) keyId = randomUUID();
      issued.push({
        keyId,
        master,
        slave,
        size,
        key: supplied.key.slice(i * bytes, (i + 1) * bytes),
        supplyOffset: supplied.supplyOffset + i * size,
        issuedAt,
      });
    }
    supplied.key.fill(0);
    for (const k of issued) this.pending.set(k.keyId, k);
    try {
      this.save();
    } catch (e) {
      // The supply's bits are spent either way (never handed out twice); the keys are not issued.
      for (const k of issued) {
        this.pending.delete(k.keyId);
        k.key.fill(0);
      }
      throw e;
    }
    // The master's copy leaves with the response; the store keeps only the slave's.
    return issued.map((k) => ({ keyId: k.keyId, key: k.key.slice() }));
  }

  /**
   * Get key with key IDs (ETSI GS QKD 014 §5.4): `slave` (the caller) fetches keys that `master`
   * obtained for it. All or nothing. 401 if any of the keys was issued to another slave; 400
   * "not found" if any is unknown, already delivered, or from another master. Delivered keys are
   * removed from the store (persisted) before they are returned.
   */
  deliver(slave: string, master: string, keyIds: string[]): DeliveredKey[] {
    this.checkPair(master, slave);
    if (!Array.isArray(keyIds) || keyIds.length === 0) throw new KeyDeliveryError(400, 'key_IDs shall name at least one key');
    if (keyIds.length > this.limits.maxKeyPerRequest) throw new KeyDeliveryError(400, `key_IDs shall not name more than max_key_per_request (${this.limits.maxKeyPerRequest}) keys`);
    if (new Set(keyIds).size !== keyIds.length) throw new KeyDeliveryError(400, 'key_IDs shall not repeat a key_ID');
    const found: PendingKey[] = [];
    const missing: string[] = [];
    for (const id of keyIds) {
      const k = typeof id === 'string' ? this.pending.get(id.toLowerCase()) : undefined;
      // §5.4: 401 when the requester is not the SAE the keys were issued to.
      if (k && k.slave !== slave) throw new KeyDeliveryError(401, MSG_UNAUTHORIZED);
      if (!k || k.master !== master) missing.push(String(id));
      else found.push(k);
    }
    if (missing.length > 0) throw new KeyDeliveryError(400, MSG_KEYS_NOT_FOUND, missing.map((key_ID) => ({ key_ID })));
    for (const k of found) this.pending.delete(k.keyId);
    try {
      this.save();
    } catch (e) {
      for (const k of found) this.pending.set(k.keyId, k);
      throw e;
    }
    const out = found.map((k) => ({ keyId: k.keyId, key: k.key.slice() }));
    for (const k of found) k.key.fill(0);
    return out;
  }

  /** Keys waiting for their slave, optionally for one master/slave pair. */
  pendingCount(master?: string, slave?: string): number {
    let n = 0;
    for (const k of this.pending.values()) if ((master === undefined || k.master === master) && (slave === undefined || k.slave === slave)) n++;
    return n;
  }

  private checkPair(master: string, slave: string): void {
    // The caller's own ID comes from its certificate; an unknown one is not authorised.
    if (!isSaeId(master) || !this.knownSae(master)) throw new KeyDeliveryError(401, MSG_UNAUTHORIZED);
    if (!isSaeId(slave)) throw new KeyDeliveryError(400, `invalid SAE ID in the URL: ${JSON.stringify(slave)}`);
    if (!this.knownSae(slave)) throw new KeyDeliveryError(400, `unknown SAE ID: ${slave}`);
    if (master === slave) throw new KeyDeliveryError(400, 'master and slave SAE IDs shall differ');
  }

  private load(): void {
    if (!existsSync(this.o.path)) return;
    const f = JSON.parse(readFileSync(this.o.path, 'utf8')) as StoreFile;
    if (f.version !== 1 || !Array.isArray(f.pending)) throw new Error(`${this.o.path}: not a version 1 SAE key store`);
    for (const p of f.pending) {
      if (!UUID.test(p.keyId)) throw new Error(`${this.o.path}: bad key_ID ${JSON.stringify(p.keyId)}`);
      this.pending.set(p.keyId, { ...p, key: new Uint8Array(Buffer.from(p.key, 'base64')) });
    }
  }

  private save(): void {
    const f: StoreFile = {
      version: 1,
      pending: [...this.pending.values()].map((k) => ({ ...k, key: Buffer.from(k.key).toString('base64') })),
    };
    writeFileAtomic(this.o.path, JSON.stringify(f, null, 1) + '\n', 0o600);
  }
}
