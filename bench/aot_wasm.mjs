// aot_wasm.mjs: times a WebAssembly module from `rnnc build -o NAME.wasm`
// under node, as aot.c times an object.
//
//   node bench/aot_wasm.mjs DIR/NAME.mjs TEST_FILE [REPS]
//
// TEST_FILE: one name a line, "label len i0 i1 ..." (rnnc-bench
// --dump-test). Calls forward(indices) of the wrapper once per name, REPS
// passes (default 5), and prints one JSON line: the median pass in
// microseconds per name (wall clock and CPU time), and the accuracy of the
// argmax. The wrapper's copies in and out are included.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [wrapper, testFile, repsArg] = process.argv.slice(2);
if (!testFile) {
  console.error('usage: node bench/aot_wasm.mjs DIR/NAME.mjs TEST_FILE [REPS]');
  process.exit(2);
}
const reps = Math.max(1, Number(repsArg ?? 5) | 0);
const model = await (await import(pathToFileURL(resolve(wrapper)))).load();
const names = readFileSync(testFile, 'utf8').trim().split('\n').map((line) => {
  const [label, len, ...chars] = line.trim().split(/\s+/).map(Number);
  if (chars.length !== len) throw new Error(`${testFile}: bad line "${line}"`);
  return { label, chars };
});

let correct = 0;
for (const { label, chars } of names) {
  const logits = model.forward(chars);
  let best = 0;
  for (let k = 1; k < logits.length; k++) if (logits[k] > logits[best]) best = k;
  correct += best === label;
}
const wall = [], cpu = [];
let sink = 0;
for (let r = 0; r < reps; r++) {
  const t = process.hrtime.bigint(), c = process.cpuUsage();
  for (const { chars } of names) sink += model.forward(chars)[0];
  wall.push(Number(process.hrtime.bigint() - t) / 1e3);
  const dc = process.cpuUsage(c);
  cpu.push(dc.user + dc.system);
}
const median = (a) => a.sort((x, y) => x - y)[a.length >> 1];
console.log(JSON.stringify({
  event: 'aot_wasm', module: wrapper, names: names.length,
  infer_us_per_name: +(median(wall) / names.length).toFixed(2),
  infer_cpu_us_per_name: +(median(cpu) / names.length).toFixed(2),
  test_accuracy: +(correct / names.length).toFixed(4), sink: Number.isFinite(sink),
}));
