// Classic libpcap capture files (https://wiki.wireshark.org/Development/LibpcapFileFormat, and
// draft-ietf-opsawg-pcap) of link frames as `qkt monitor` sees them on the cable, for Wireshark
// with docs/wireshark/qkt.lua. Link type LINKTYPE_USER0 (147); each record is a 4-byte
// pseudo-header (version, direction, flags, reserved) then the frame's bytes between its 0x00
// delimiters, still COBS-encoded. A frame sent as FEC shards (docs/protocol.md 2.6) is a record per
// shard (flag FEC_SHARD) and, once the monitor has put it together, one more record of the frame's
// body COBS-encoded as a plain frame would be (flag FEC_REASSEMBLED). Records are written one by one with a synchronous write, so a
// monitor that is killed leaves a file whose every complete record reads (docs/cli.md "monitor").
import { closeSync, constants, openSync, writeSync } from 'node:fs';

export const PCAP_MAGIC = 0xa1b2c3d4;
/** LINKTYPE_USER0: one of the link types reserved for private use (tcpdump.org/linktypes.html). */
export const LINKTYPE_USER0 = 147;
export const PCAP_SNAPLEN = 65_535;
export const PSEUDO_HEADER_SIZE = 4;
/** Pseudo-header byte 0: the layout version of this pseudo-header. */
export const PSEUDO_HEADER_VERSION = 1;

/** Pseudo-header byte 1: which way the frame went (A is the device side, B the host side). */
export const PcapDirection = {
  HOST_TO_DEVICE: 0,
  DEVICE_TO_HOST: 1,
} as const;
export type PcapDirectionValue = (typeof PcapDirection)[keyof typeof PcapDirection];

/** Pseudo-header byte 2: the monitor's verdict on the frame; 0 for a good frame. */
export const PcapFlag = {
  /** Not valid COBS. */
  BAD_COBS: 0x01,
  /** COBS decodes but the CRC-32 does not match. */
  BAD_CRC: 0x02,
  /** Too short to be a frame (under 11 bytes decoded): line noise or garbage between frames. */
  SHORT: 0x04,
  /** Longer than the monitor keeps (or than the advertised maxFrame); the record may be cut. */
  OVERSIZE: 0x08,
  /** CRC good but not a v1 message: unknown version or kind, or the payload is not a CBOR map. */
  BAD_MESSAGE: 0x10,
  /**
   * One FEC shard (its body starts 0xFE), as on the wire. With BAD_CRC: not a whole shard (its
   * 16-bit check fails or its k, n, index or size are impossible).
   */
  FEC_SHARD: 0x20,
  /**
   * Not bytes from the wire: a frame the monitor put together from the shards before it, its body
   * COBS-encoded as a plain frame would be; the other bits are the verdict on that body.
   */
  FEC_REASSEMBLED: 0x40,
} as const;

/** The 24-byte global header: little-endian, v2.4, UTC, snaplen 65535, LINKTYPE_USER0. */
export function pcapGlobalHeader(): Uint8Array {
  const b = new Uint8Array(24);
  const v = new DataView(b.buffer);
  v.setUint32(0, PCAP_MAGIC, true);
  v.setUint16(4, 2, true);
  v.setUint16(6, 4, true);
  v.setInt32(8, 0, true); // thiszone: UTC
  v.setUint32(12, 0, true); // sigfigs
  v.setUint32(16, PCAP_SNAPLEN, true);
  v.setUint32(20, LINKTYPE_USER0, true);
  return b;
}

export interface PcapFrame {
  /** Capture time, microseconds since the Unix epoch. */
  timeUs: number;
  direction: PcapDirectionValue;
  /** PcapFlag bits. */
  flags: number;
  /** The frame as on the wire, between its delimiters (possibly cut: see origLength). */
  bytes: Uint8Array;
  /** Its real length on the wire, when `bytes` holds only its start. Default bytes.length. */
  origLength?: number;
}

/** One record: 16-byte record header, pseudo-header, frame bytes (cut to the snaplen). */
export function pcapRecord(f: PcapFrame): Uint8Array {
  if (!Number.isSafeInteger(f.timeUs) || f.timeUs < 0) throw new RangeError(`timeUs must be a non-negative integer, got ${f.timeUs}`);
  const orig = PSEUDO_HEADER_SIZE + Math.max(f.origLength ?? 0, f.bytes.length);
  const incl = Math.min(PSEUDO_HEADER_SIZE + f.bytes.length, PCAP_SNAPLEN);
  const b = new Uint8Array(16 + incl);
  const v = new DataView(b.buffer);
  v.setUint32(0, Math.floor(f.timeUs / 1e6), true);
  v.setUint32(4, f.timeUs % 1e6, true);
  v.setUint32(8, incl, true);
  v.setUint32(12, orig, true);
  b[16] = PSEUDO_HEADER_VERSION;
  b[17] = f.direction;
  b[18] = f.flags & 0xff;
  b[19] = 0;
  b.set(f.bytes.subarray(0, incl - PSEUDO_HEADER_SIZE), 16 + PSEUDO_HEADER_SIZE);
  return b;
}

/** A capture file being written: created (or truncated) at open, one record per write. */
export class PcapWriter {
  #fd: number | undefined;
  /** Records written. */
  records = 0;

  private constructor(
    readonly path: string,
    fd: number,
  ) {
    this.#fd = fd;
  }

  /**
   * Create or truncate `path` and write the global header. Throws the fs error (ENOENT, EACCES...).
   * Non-blocking: a named pipe (live capture: `mkfifo f; wireshark -k -i f`) that no program reads
   * yet is refused at once (ENXIO) instead of blocking the monitor where no signal can stop it,
   * and a reader that falls behind stops the capture (EAGAIN) instead of holding up the relay. On
   * a regular file the flag changes nothing.
   */
  static open(path: string): PcapWriter {
    let fd: number;
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NONBLOCK, 0o666);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENXIO') throw new Error(`${path}: a pipe that no program reads yet: start the reader first (wireshark -k -i ${path})`);
      throw e;
    }
    try {
      writeSync(fd, pcapGlobalHeader());
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    return new PcapWriter(path, fd);
  }

  /** Append one record; it is in the file (the kernel's page cache) when this returns. */
  write(f: PcapFrame): void {
    if (this.#fd === undefined) throw new Error(`capture ${this.path} is closed`);
    const rec = pcapRecord(f);
    let done = 0;
    try {
      while (done < rec.length) done += writeSync(this.#fd, rec, done);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') throw new Error('its reader does not keep up (a pipe that is full)');
      throw e;
    }
    this.records++;
  }

  close(): void {
    if (this.#fd === undefined) return;
    closeSync(this.#fd);
    this.#fd = undefined;
  }
}
