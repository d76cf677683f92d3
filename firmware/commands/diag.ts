// DIAG command group: echo, and a scratch bulk sink that checksums what it receives without
// storing it, so link tests and `qkt bench link` measure the link and not the flash. Each link
// has its own sink: no connection can see, write into or replace another's.
import { crc32 } from 'node:zlib';
import { acceptChunk } from '../link/bulk.js';
import type { BulkSink } from '../link/bulk.js';
import { DiagCmd, Group } from '../link/groups.js';
import { LinkError, Rc } from '../link/errors.js';
import { bytes, uint } from '../link/fields.js';
import type { CommandGroup, LinkPeer, RequestContext } from '../link/dispatch.js';

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

export function diagGroup(o: { maxChunk: number; rng: (n: number) => Uint8Array }): CommandGroup & { release(link: LinkPeer): void } {
  // One sink per link (at most one per connection the module serves), dropped when it closes.
  // A request without a link (in-process use) has one sink of its own.
  const sinks = new Map<LinkPeer | undefined, ScratchSink>();
  // Random ids, not counted: an id says nothing about another link's sink.
  const newId = (): number => {
    const r = o.rng(4);
    return (((r[0]! << 24) | (r[1]! << 16) | (r[2]! << 8) | r[3]!) >>> 0) || 1;
  };
  const current = (id: number, c: RequestContext): ScratchSink => {
    const sink = sinks.get(c.link);
    if (!sink || sink.id !== id) throw new LinkError(Rc.NO_TRANSFER, `no sink transfer ${id}`);
    return sink;
  };
  return {
    release: (link) => void sinks.delete(link),
    id: Group.DIAG,
    name: 'diag',
    commands: {
      [DiagCmd.ECHO]: (p) => ({ d: bytes(p, 'd', o.maxChunk) }),
      [DiagCmd.SINK_BEGIN]: (p, c) => {
        const n = uint(p, 'n', 2 ** 32 - 1);
        // A closed link's request never runs (the dispatcher drops it), so no sink outlives its link.
        const sink = new ScratchSink(newId(), n);
        sinks.set(c.link, sink);
        return { t: sink.id, c: 0 };
      },
      [DiagCmd.SINK_CHUNK]: (p, c) => acceptChunk(current(uint(p, 't'), c), uint(p, 'o'), bytes(p, 'd', o.maxChunk)),
      [DiagCmd.SINK_STATUS]: (p, c) => {
        const s = current(uint(p, 't'), c);
        return { c: s.committed, n: s.total, crc: s.crc };
      },
    },
  };
}
