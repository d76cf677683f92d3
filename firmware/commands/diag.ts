// DIAG command group: echo, and a scratch bulk sink that checksums what it receives without
// storing it, so link tests and `qkt bench link` measure the link and not the flash.
import { crc32 } from 'node:zlib';
import { acceptChunk } from '../link/bulk.js';
import type { BulkSink } from '../link/bulk.js';
import { DiagCmd, Group } from '../link/groups.js';
import { LinkError, Rc } from '../link/errors.js';
import { bytes, uint } from '../link/fields.js';
import type { CommandGroup } from '../link/dispatch.js';

class ScratchSink implements BulkSink {
  committed = 0;
  crc = 0;
  constructor(
    readonly id: number,
    readonly total: number,
  ) {}
  write(_offset: number, data: Uint8Array): void {
    this.crc = crc32(data, this.crc);
    this.committed += data.length;
  }
}

export function diagGroup(limits: { maxChunk: number }): CommandGroup {
  let sink: ScratchSink | undefined;
  let nextId = 1;
  const current = (id: number): ScratchSink => {
    if (!sink || sink.id !== id) throw new LinkError(Rc.NO_TRANSFER, `no sink transfer ${id}`);
    return sink;
  };
  return {
    id: Group.DIAG,
    name: 'diag',
    commands: {
      [DiagCmd.ECHO]: (p) => ({ d: bytes(p, 'd', limits.maxChunk) }),
      [DiagCmd.SINK_BEGIN]: (p) => {
        sink = new ScratchSink(nextId++, uint(p, 'n', 2 ** 32 - 1));
        return { t: sink.id, c: 0 };
      },
      [DiagCmd.SINK_CHUNK]: (p) => acceptChunk(current(uint(p, 't')), uint(p, 'o'), bytes(p, 'd', limits.maxChunk)),
      [DiagCmd.SINK_STATUS]: (p) => {
        const s = current(uint(p, 't'));
        return { c: s.committed, n: s.total, crc: s.crc };
      },
    },
  };
}
