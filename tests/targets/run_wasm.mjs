// run_wasm.mjs MODEL.mjs NAMES.json: what driver.c prints for an object,
// for a WebAssembly module of rnnc build and its JavaScript wrapper, under
// node: the number of the module's imports, then for each name of the JSON
// array the status and logits of forward() and the class and
// probabilities of predict() (floats as their bits in hex), then the
// results of bad inputs, then "done". test_targets.c runs it.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [wrapper, namesFile] = process.argv.slice(2);
const m = await import(pathToFileURL(wrapper));
const wasm = readFileSync(wrapper.replace(/\.mjs$/, '.wasm'));
console.log(`imports: ${WebAssembly.Module.imports(new WebAssembly.Module(wasm)).length}`);

const model = await m.load(); // the default: the .wasm file beside the wrapper
const hex = (a) => [...new Uint32Array(Float32Array.from(a).buffer)]
  .map((u) => ' ' + u.toString(16).padStart(8, '0')).join('');
for (const name of JSON.parse(readFileSync(namesFile, 'utf8'))) {
  const logits = model.forward([...name].map((c) => m.vocab.indexOf(c)));
  const p = model.predict(name);
  console.log(`0 ${p ? p.index : -1}${hex(logits)}${hex(p ? p.probs : logits)}`);
}

const error = (f) => {
  try {
    f();
    return 'ok';
  } catch (e) {
    return e.constructor.name;
  }
};
const longest = 'a'.repeat(m.maxLen);
console.log(`forward []: ${error(() => model.forward([]))}`);
console.log(`forward maxLen+1: ${error(() => model.forward(Array(m.maxLen + 1).fill(0)))}`);
console.log(`forward index 59: ${error(() => model.forward([1, 59]))}`);
console.log(`forward index -1: ${error(() => model.forward([1, -1]))}`);
console.log(`forward index 1.5: ${error(() => model.forward([1, 1.5]))}`);
console.log(`forward index '1': ${error(() => model.forward([1, '1']))}`);
console.log(`forward maxLen: ${model.forward(Array(m.maxLen).fill(3)).length}`);
console.log(`predict '': ${model.predict('')}`);
console.log(`predict 'a/b': ${model.predict('a/b')}`);
console.log(`predict 'Jos\u00e9': ${model.predict('Jos\u00e9')}`);
console.log(`predict 'a\\0b': ${model.predict('a\0b')}`);
console.log(`predict undefined: ${model.predict(undefined)}`);
console.log(`predict maxLen: ${model.predict(longest) !== null}`);
console.log(`predict maxLen+1: ${model.predict(longest + 'a')}`);
console.log(`predict 100 KB: ${model.predict('a'.repeat(100000))}`);
console.log(`labels: ${m.labels[0]} ${m.labels[m.labels.length - 1]}`);
console.log('done');
