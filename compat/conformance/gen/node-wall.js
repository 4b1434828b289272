// Records compat/conformance/corpus/node-wall.pb.gz: a wall profile with CPU time from
// @datadog/pprof (the profiler the Pyroscope Node agent runs). In an empty directory:
// `npm install @datadog/pprof@5.20.0 && node node-wall.js node-wall.pb.gz`.
const pprof = require('@datadog/pprof');
const fs = require('fs');
const crypto = require('crypto');
function burn(ms) { const end = Date.now() + ms; let h = 'x'; while (Date.now() < end) h = crypto.createHash('sha256').update(h).digest('hex'); return h; }
function idle(ms) { return new Promise(r => setTimeout(r, ms)); }
(async () => {
  pprof.time.start({ intervalMicros: 10000, durationMillis: 3000, withContexts: true, lineNumbers: false, collectCpuTime: true });
  for (let i = 0; i < 6; i++) { burn(250); await idle(250); }
  const profile = pprof.time.stop();
  const buf = await pprof.encode(profile);
  fs.writeFileSync(process.argv[2], buf);
  console.log('sample types', profile.sampleType.map(t => profile.stringTable.strings[t.type] + '/' + profile.stringTable.strings[t.unit]));
})();
