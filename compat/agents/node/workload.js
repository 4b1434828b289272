// A workload profiled by the official Pyroscope Node.js agent (@pyroscope/nodejs), pointed at Kiln.
const Pyroscope = require('@pyroscope/nodejs');
const crypto = require('crypto');

const [server, seconds] = process.argv.slice(2);

function pyroscopeNodeBurn(ms) {
  const end = Date.now() + ms;
  let data = Buffer.alloc(4096);
  while (Date.now() < end) data = crypto.createHash('sha256').update(data).digest().fill(1, 0, 1);
  return data;
}

Pyroscope.init({
  serverAddress: server,
  appName: 'agent-node',
  tags: { agent: 'pyroscope-nodejs' },
  flushIntervalMs: 3000,
  // The API key as the Basic password; no credential without KILN_AGENT_KEY.
  ...(process.env.KILN_AGENT_KEY ? { basicAuthUser: 'agent', basicAuthPassword: process.env.KILN_AGENT_KEY } : {}),
});
Pyroscope.start();

const end = Date.now() + Number(seconds) * 1000;
function tick() {
  if (Date.now() >= end) {
    Pyroscope.stop().then(() => process.exit(0));
    return;
  }
  pyroscopeNodeBurn(80);
  setImmediate(tick);
}
tick();
