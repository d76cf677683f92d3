// `qkt bench crypto`: service-data throughput (seal + open, header encoded and decoded) of OTP and
// each AEAD suite, on the node:crypto provider and the reference, beside raw node:crypto
// AES-256-GCM (and each suite's raw node:crypto primitives) on the same data in the same run. The
// ratio to raw AES-256-GCM is the figure; absolute MB/s vary with the machine's load.
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { cipherOpen, cipherSealMessage, decodeServiceHeader, encodeServiceHeader, otpOpen, otpSeal, SessionCipher, AEAD_SUITES } from '../../firmware/crypto/service.js';
import type { AeadSuite } from '../../firmware/crypto/service.js';
import { NODE_HAS, PROVIDERS } from '../../firmware/crypto/suites.js';
import type { CryptoProvider } from '../../firmware/crypto/suites.js';

export interface CryptoBenchOptions {
  /** Service-data bytes each case moves per round (the reference provider's cases move an eighth). */
  bytes: number;
  /** Rounds, cases interleaved within each; the median round counts. */
  rounds: number;
  /** Message sizes (bytes of service data per message); the first is the one the target is for. */
  messageSizes?: number[];
  log?: (line: string) => void;
}

export interface CryptoCase {
  name: string;
  kind: 'service' | 'raw';
  /** 'otp', an AEAD suite, or for raw cases the node:crypto primitives. */
  algorithm: string;
  provider: 'node' | 'reference' | 'node:crypto';
  /** Bytes moved per round. */
  bytes: number;
  /** 10^6 bytes of service data per second, each sealed and opened (median round). */
  mbPerSecond: number;
  /** Throughput over raw node:crypto aes-256-gcm's at the same message size: the median of the per-round ratios. */
  ratioToNodeAesGcm: number;
  /** Service cases on node: mbPerSecond over the raw node:crypto primitives of the same suite. */
  ratioToOwnRaw?: number;
}

export interface CryptoBenchResult {
  bench: 'crypto';
  date: string;
  node: string;
  openssl: string;
  cpu: string;
  rounds: number;
  bytes: number;
  nodeHas: Record<string, boolean>;
  sizes: Array<{ messageBytes: number; cases: CryptoCase[] }>;
  /** The target: every AEAD suite's service throughput (node provider) >= 0.8x raw node:crypto AES-256-GCM at the first message size. */
  target: { ratio: number; messageBytes: number; suites: Record<AeadSuite, { ratio: number; met: boolean }> };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (x: number, d = 3): number => Math.round(x * 10 ** d) / 10 ** d;

interface Runner {
  name: string;
  kind: CryptoCase['kind'];
  algorithm: string;
  provider: CryptoCase['provider'];
  bytes: number;
  /** Seal and open every message once; returns the bytes it opened (checked against the input). */
  run(): number;
}

/** 12-byte nonce as service.ts builds it (direction up = 1, then the u64 counter). */
function nonceInto(b: Buffer, counter: number): Buffer {
  b.writeUInt32BE(1, 0);
  b.writeBigUInt64BE(BigInt(counter), 4);
  return b;
}

function rawAead(alg: 'aes-256-gcm' | 'chacha20-poly1305', key: Buffer, aad: Buffer, msgs: Uint8Array[]): () => number {
  const nonce = Buffer.alloc(12);
  return () => {
    let n = 0;
    for (let i = 0; i < msgs.length; i++) {
      nonceInto(nonce, i);
      const o = { authTagLength: 16 } as const;
      const c = alg === 'aes-256-gcm' ? createCipheriv(alg, key, nonce, o) : createCipheriv(alg, key, nonce, o);
      c.setAAD(aad);
      const ct = Buffer.concat([c.update(msgs[i]!), c.final()]);
      const tag = c.getAuthTag();
      const d = alg === 'aes-256-gcm' ? createDecipheriv(alg, key, nonce, o) : createDecipheriv(alg, key, nonce, o);
      d.setAAD(aad);
      d.setAuthTag(tag);
      n += Buffer.concat([d.update(ct), d.final()]).length;
    }
    return n;
  };
}

const u64 = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};

function rawSm4Hmac(enc: Buffer, mac: Buffer, aad: Buffer, msgs: Uint8Array[]): () => number {
  const nonce = Buffer.alloc(12);
  return () => {
    let n = 0;
    for (let i = 0; i < msgs.length; i++) {
      nonceInto(nonce, i);
      const ctr = Buffer.concat([nonce, Buffer.of(0, 0, 0, 1)]);
      const c = createCipheriv('sm4-ctr', enc, ctr);
      const ct = Buffer.concat([c.update(msgs[i]!), c.final()]);
      // The suite's MAC input layout (nonce, u64 len aad, aad, u64 len ct, ct), as plain OpenSSL calls.
      const macOf = () => createHmac('sm3', mac).update(nonce).update(u64(aad.length)).update(aad).update(u64(ct.length)).update(ct).digest().subarray(0, 16);
      const tag = macOf();
      const check = macOf();
      if (!check.equals(tag)) throw new Error('bench: raw sm4 tag mismatch');
      const d = createCipheriv('sm4-ctr', enc, ctr);
      n += Buffer.concat([d.update(ct), d.final()]).length;
    }
    return n;
  };
}

function makeRunners(size: number, bytes: number): Runner[] {
  const data = new Uint8Array(randomBytes(bytes));
  const messages = (b: number) => Array.from({ length: Math.max(1, Math.floor(b / size)) }, (_, i) => data.subarray(i * size, (i + 1) * size));
  const full = messages(bytes);
  const small = messages(Math.max(size, Math.floor(bytes / 8)));
  const batchId = new Uint8Array(randomBytes(16));
  const key = randomBytes(32);
  const aad = Buffer.from(encodeServiceHeader({ mode: 'aead', keyIds: [{ batchId, bitOffset: 0, bits: 256 }], counter: 0 }));
  const runners: Runner[] = [];
  const total = (m: Uint8Array[]) => m.reduce((a, x) => a + x.length, 0);

  runners.push({ name: 'node:crypto aes-256-gcm (raw)', kind: 'raw', algorithm: 'aes-256-gcm', provider: 'node:crypto', bytes: total(full), run: rawAead('aes-256-gcm', key, aad, full) });
  if (NODE_HAS['chacha20-poly1305']) runners.push({ name: 'node:crypto chacha20-poly1305 (raw)', kind: 'raw', algorithm: 'chacha20-poly1305', provider: 'node:crypto', bytes: total(full), run: rawAead('chacha20-poly1305', key, aad, full) });
  if (NODE_HAS['sm4-ctr'] && NODE_HAS.sm3) {
    runners.push({ name: 'node:crypto sm4-ctr + hmac-sm3 (raw)', kind: 'raw', algorithm: 'sm4-ctr-hmac-sm3', provider: 'node:crypto', bytes: total(full), run: rawSm4Hmac(randomBytes(16), randomBytes(32), aad, full) });
  }

  // OTP: pool bytes stand in as pad and MAC keys (a bench needs their length, not their secrecy).
  const pad = new Uint8Array(randomBytes(bytes));
  const macKeys = new Uint8Array(randomBytes(32 * full.length));
  const otpRange = (len: number) => [
    { batchId, bitOffset: 0, bits: 256 },
    ...(len ? [{ batchId, bitOffset: 256, bits: len * 8 }] : []),
  ];
  runners.push({
    name: 'OTP (XOR + Poly1305)',
    kind: 'service',
    algorithm: 'otp',
    provider: 'reference',
    bytes: total(full),
    run: () => {
      let n = 0;
      for (let i = 0; i < full.length; i++) {
        const m = full[i]!;
        const mk = macKeys.subarray(32 * i, 32 * i + 32);
        const ks = pad.subarray(i * size, i * size + m.length);
        const head = encodeServiceHeader({ mode: 'otp', keyIds: otpRange(m.length), counter: i });
        const sealed = otpSeal(ks, m, mk, head);
        const { length } = decodeServiceHeader(head);
        n += otpOpen(ks, sealed, mk, head.subarray(0, length)).length;
      }
      return n;
    },
  });

  const service = (suite: AeadSuite, provider: CryptoProvider, msgs: Uint8Array[]): Runner => {
    const cipher = new SessionCipher(suite, key, provider);
    const suiteField = suite === 'aes-256-gcm' ? {} : { suite };
    return {
      name: `${suite} (${provider.name})`,
      kind: 'service',
      algorithm: suite,
      provider: provider.name,
      bytes: total(msgs),
      run: () => {
        let n = 0;
        for (let i = 0; i < msgs.length; i++) {
          const head = encodeServiceHeader({ mode: 'aead', ...suiteField, keyIds: [{ batchId, bitOffset: 0, bits: 256 }], counter: i });
          const m = cipherSealMessage(cipher, i, msgs[i]!, head, 'up');
          const { header, length } = decodeServiceHeader(m);
          n += cipherOpen(cipher, header.counter, m.subarray(length), m.subarray(0, length), 'up').length;
        }
        return n;
      },
    };
  };
  for (const suite of AEAD_SUITES) runners.push(service(suite, PROVIDERS.node, full));
  for (const suite of AEAD_SUITES) runners.push(service(suite, PROVIDERS.reference, small));
  return runners;
}

export async function benchCrypto(o: CryptoBenchOptions): Promise<CryptoBenchResult> {
  const sizes = o.messageSizes ?? [4096, 256];
  const out: CryptoBenchResult['sizes'] = [];
  for (const size of sizes) {
    o.log?.(`crypto: ${size}-byte messages, ${o.bytes} bytes per case, ${o.rounds} rounds...`);
    const runners = makeRunners(size, o.bytes);
    for (const r of runners) if (r.run() !== r.bytes) throw new Error(`bench crypto: ${r.name} did not open what it sealed`); // warm-up and check
    const times = runners.map(() => [] as number[]);
    for (let k = 0; k < o.rounds; k++) {
      // The order rotates each round, so no case always runs right after the allocation-heavy
      // reference cases (whose garbage is collected during whatever runs next).
      runners.forEach((_, j) => {
        const i = (j + k) % runners.length;
        const r = runners[i]!;
        const t0 = process.hrtime.bigint();
        const n = r.run();
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        if (n !== r.bytes) throw new Error(`bench crypto: ${r.name} opened ${n} of ${r.bytes} bytes`);
        times[i]!.push(r.bytes / 1e6 / Math.max(s, 1e-9));
      });
      // Yield between rounds so a SIGINT is seen.
      await new Promise((res) => setImmediate(res));
    }
    const rate = runners.map((_, i) => median(times[i]!));
    // Ratios are taken round by round (each case against the baseline measured next to it, so a
    // change in the machine's load between rounds cancels), then the median of those.
    const ratio = (i: number, j: number) => median(times[i]!.map((x, k) => x / times[j]![k]!));
    const rawOf = (alg: string) => runners.findIndex((r) => r.kind === 'raw' && r.algorithm === alg);
    out.push({
      messageBytes: size,
      cases: runners.map((r, i) => {
        const raw = rawOf(r.algorithm);
        return {
          name: r.name,
          kind: r.kind,
          algorithm: r.algorithm,
          provider: r.provider,
          bytes: r.bytes,
          mbPerSecond: round(rate[i]!, 1),
          ratioToNodeAesGcm: round(ratio(i, 0)),
          ...(r.kind === 'service' && r.provider === 'node' && raw >= 0 ? { ratioToOwnRaw: round(ratio(i, raw)) } : {}),
        };
      }),
    });
  }
  const first = out[0]!;
  const suites = Object.fromEntries(
    AEAD_SUITES.map((s) => {
      const c = first.cases.find((x) => x.kind === 'service' && x.provider === 'node' && x.algorithm === s)!;
      return [s, { ratio: c.ratioToNodeAesGcm, met: c.ratioToNodeAesGcm >= 0.8 }];
    }),
  ) as CryptoBenchResult['target']['suites'];
  return {
    bench: 'crypto',
    date: new Date().toISOString(),
    node: process.version,
    openssl: process.versions.openssl ?? 'unknown',
    cpu: `${cpus()[0]?.model ?? 'unknown'} x ${cpus().length}`,
    rounds: o.rounds,
    bytes: o.bytes,
    nodeHas: { ...NODE_HAS },
    sizes: out,
    target: { ratio: 0.8, messageBytes: first.messageBytes, suites },
  };
}

export function formatCryptoBench(r: CryptoBenchResult): string {
  const lines = [
    `## crypto: ${r.date}, node ${r.node}, OpenSSL ${r.openssl}, ${r.cpu}`,
    '',
    `Seal + open of service data (header encoded and decoded, 16-byte tags), ${r.bytes.toLocaleString('en-US')} bytes per case (reference provider: an eighth), ${r.rounds} interleaved rounds: MB/s is the median round (10^6 bytes/s), a ratio the median of the per-round ratios.`,
  ];
  for (const s of r.sizes) {
    lines.push('', `### ${s.messageBytes}-byte messages`, '', '| case | MB/s | x node:crypto aes-256-gcm | x its own raw node:crypto |', '|---|---:|---:|---:|');
    for (const c of s.cases) lines.push(`| ${c.name} | ${c.mbPerSecond} | ${c.ratioToNodeAesGcm}x | ${c.ratioToOwnRaw !== undefined ? `${c.ratioToOwnRaw}x` : ''} |`);
  }
  lines.push('', `Target: each AEAD suite (node provider) >= ${r.target.ratio}x raw node:crypto aes-256-gcm at ${r.target.messageBytes}-byte messages.`, '');
  lines.push('| suite | ratio | met |', '|---|---:|---|');
  for (const [s, v] of Object.entries(r.target.suites)) lines.push(`| ${s} | ${v.ratio}x | ${v.met ? 'yes' : 'no'} |`);
  return lines.join('\n');
}
