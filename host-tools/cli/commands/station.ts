// `qkt station run`: the master station service on TCP (see host-tools/station/serve.ts).
import { defineCommand, str } from '../command.js';
import { openKmd } from '../home.js';
import { startStationServer } from '../../station/serve.js';

export default defineCommand({
  path: ['station', 'run'],
  summary: 'run the master station: open terminal uplinks with the pre-applied keys, seal downlinks',
  usage: 'qkt station run --home H --listen HOST:PORT',
  examples: ['qkt station run --home ./kmd --listen 127.0.0.1:7200'],
  options: { home: { type: 'string' }, listen: { type: 'string' } },
  required: ['listen'],
  async run(v, _p, io) {
    const home = openKmd(v);
    const server = await startStationServer(home.path('station'), str(v, 'listen')!, io.note);
    const ready = { event: 'ready', listen: server.address, store: home.path('station'), inbox: home.path('station', 'inbox.jsonl'), pid: process.pid };
    io.ready(ready, `master station on ${server.address}, keys from ${ready.store}; Ctrl-C to stop`);
    await io.stopped;
    await server.close();
    return ready;
  },
});
