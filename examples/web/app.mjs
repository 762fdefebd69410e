// app.mjs: the page of index.html. names.mjs (written by rnnc build beside
// names.wasm) loads the model; each input event classifies the name in the
// box and shows the three most likely languages.
//
// Test mode (test_web.mjs): index.html?name=A&name=B types each name into
// the box one character at a time and logs, in <pre id="log">, what the
// page then shows, in the format of `rnnc predict`.
import { load, labels } from './names.mjs';

const input = document.getElementById('name');
const asciiLine = document.getElementById('ascii');
const result = document.getElementById('result');

// Names as training saw them: ASCII, as rnnc's normalizer (unidecode's
// table) makes them. Accents go (NFKD, then the combining marks), and the
// letters without a decomposition that surnames use are spelled out.
const spelled = {
  ß: 'ss', æ: 'ae', Æ: 'AE', œ: 'oe', Œ: 'OE', ø: 'o', Ø: 'O', ł: 'l', Ł: 'L',
  đ: 'd', Đ: 'D', ð: 'd', Ð: 'D', þ: 'th', Þ: 'Th', ı: 'i',
};
const ascii = (name) =>
  name.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').replace(/[^\x00-\x7f]/g, (c) => spelled[c] ?? c);

// printf's %5.1f of 100 * p, with p a float as the C programs compute it
const percent = (p) => Math.fround(100 * p).toFixed(1);

function show(name) {
  const a = ascii(name.trim());
  const r = a ? model.predict(a) : null;
  asciiLine.textContent = !a ? '' : !r ? `"${a}" has a character the model does not know`
                                 : a !== name ? `as ${a}` : '';
  result.replaceChildren();
  if (!r) return;
  const ranked = [...r.probs.keys()].sort((i, j) => r.probs[j] - r.probs[i]).slice(0, 3);
  for (const k of ranked) {
    const li = document.createElement('li');
    const bar = document.createElement('div');
    bar.className = 'bar';
    bar.style.width = `${100 * r.probs[k]}%`;
    li.append(Object.assign(document.createElement('span'), { className: 'label', textContent: labels[k] }),
              Object.assign(document.createElement('span'), { className: 'percent', textContent: `${percent(r.probs[k])}%` }),
              bar);
    result.append(li);
  }
}

const model = await load();
input.addEventListener('input', () => show(input.value));
input.disabled = false;
input.focus();

const typed = new URLSearchParams(location.search).getAll('name');
if (typed.length) {
  const log = document.getElementById('log');
  for (const name of typed) {
    input.value = '';
    for (const c of name) {
      input.value += c;
      input.dispatchEvent(new Event('input'));
    }
    const a = ascii(name);
    log.textContent += `${name}${a !== name ? ` (${a})` : ''}\n`;
    for (const li of result.children) {
      const label = li.querySelector('.label').textContent;
      const pct = li.querySelector('.percent').textContent;
      log.textContent += `  ${label.padEnd(12)} ${pct.padStart(6)}\n`;
    }
  }
  log.textContent += 'done\n';
  log.hidden = false;
}
