// The Node side of tests/bench/bench_parse: what a Node adapter does with a Direct Line
// payload that holds a handoff.initiate: JSON.parse, find the event, take the transcript
// and the context (parsing them too when they came as JSON strings).
// Usage: node bench_node.js SECONDS FILE...  prints "FILE BYTES MB/s" per file (best round).
'use strict';
const fs = require('fs');

function handoff(text) {
  const set = JSON.parse(text);
  const ev = set.activities.find(a => a.type === 'event' && a.name === 'handoff.initiate');
  const att = (ev.attachments || []).find(a => typeof a.name === 'string' && a.name.toLowerCase() === 'transcript');
  let content = att && att.content;
  if (typeof content === 'string') content = JSON.parse(content);
  const context = typeof ev.value === 'string' ? JSON.parse(ev.value) : ev.value;
  return { context, transcript: content ? content.activities : [] };
}

const seconds = parseFloat(process.argv[2]);
for (const file of process.argv.slice(3)) {
  const text = fs.readFileSync(file, 'utf8');
  const bytes = Buffer.byteLength(text);
  let sink = 0, iters = 1, best = Infinity;
  for (;;) {                                   // calibrate: one round lasts about SECONDS / 5
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) sink += handoff(text).transcript.length;
    if (Number(process.hrtime.bigint() - t0) / 1e9 > seconds / 10) break;
    iters *= 2;
  }
  for (let round = 0; round < 5; round++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) sink += handoff(text).transcript.length;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9 / iters);
  }
  if (sink < 0) console.error(sink);
  console.log(`${file} ${bytes} ${(bytes / best / 1e6).toFixed(1)}`);
}
