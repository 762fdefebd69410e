// test_web.mjs DIR RNNC GRAPH CKPT NAME...: the web example in a browser.
// Serves DIR (the built page: index.html, app.mjs, names.mjs, names.wasm)
// on 127.0.0.1, has headless Chromium type the names into the page
// (index.html?name=...), and compares what the page then shows with what
// `rnnc predict GRAPH CKPT NAME...` (the JIT) prints. Run by ctest
// (test_web_example); needs Debian's chromium and nodejs.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';

const [dir, rnnc, graph, ckpt, ...names] = process.argv.slice(2);
const fail = (msg) => {
  console.log(msg);
  process.exit(1);
};

const types = { '.html': 'text/html', '.mjs': 'text/javascript', '.wasm': 'application/wasm' };
const server = http.createServer((req, res) => {
  const path = join(dir, normalize(new URL(req.url, 'http://localhost').pathname));
  try {
    const body = readFileSync(path);
    res.writeHead(200, { 'content-type': types[extname(path)] ?? 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const query = names.map((n) => `name=${encodeURIComponent(n)}`).join('&');
const url = `http://127.0.0.1:${server.address().port}/index.html?${query}`;

const profile = mkdtempSync(join(tmpdir(), 'rnnc-chromium-'));
const browser = spawn('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  `--user-data-dir=${profile}`, '--virtual-time-budget=60000', '--dump-dom', url]);
let dom = '';
browser.stdout.on('data', (d) => (dom += d));
const status = await new Promise((resolve) => {
  browser.on('error', (e) => resolve(e.code === 'ENOENT' ? 'missing' : String(e)));
  browser.on('close', resolve);
});
server.close();
rmSync(profile, { recursive: true, force: true });
if (status === 'missing')
  fail('chromium is not installed: it is in the Debian package chromium (sh scripts/install-deps --test)');
if (status !== 0) fail(`chromium exited with ${status}`);

const pre = /<pre id="log"[^>]*>([\s\S]*?)<\/pre>/.exec(dom);
const page = (pre ? pre[1] : '').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"')
  .replace(/&#39;/g, "'").replace(/&amp;/g, '&');
if (!page.endsWith('done\n')) fail(`the page did not finish:\n${dom}`);

const jit = spawnSync(rnnc, ['predict', graph, ckpt, ...names], { encoding: 'utf8' });
if (jit.status !== 0) fail(`rnnc predict failed:\n${jit.stderr}`);
if (page !== jit.stdout + 'done\n')
  fail(`the page shows:\n${page}\nrnnc predict:\n${jit.stdout}`);
process.stdout.write(page);
console.log('the page (WebAssembly, Chromium) = rnnc predict (JIT)');
