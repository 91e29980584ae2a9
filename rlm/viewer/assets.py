"""The viewer's style sheet and script, inlined into every page (no files, no network).

The script never parses data as markup: it reads text from the page and from the JSON data
block and makes text nodes (``textContent``) and elements it names itself.
"""

from __future__ import annotations

CSS = """
:root{--bg:#f5f6f8;--card:#fff;--line:#e2e5ea;--ink:#1f2328;--muted:#656d76;--ok:#1a7f37;--okbg:#dafbe1;
--warn:#9a6700;--warnbg:#fff3c4;--bad:#cf222e;--badbg:#ffe4e6;--m:#6366f1;--s:#14b8a6;--x:#f59e0b;--u:#94a3b8;
--o:#d5dae1;--mono:"DejaVu Sans Mono","Liberation Mono",Menlo,Consolas,monospace}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.5 system-ui,-apple-system,"Segoe UI",
"Liberation Sans","DejaVu Sans",sans-serif}
header.top{position:sticky;top:0;z-index:5;display:flex;gap:14px;align-items:baseline;padding:10px 24px;
background:#0f172a;color:#e2e8f0}
header.top .brand{font-weight:700;letter-spacing:.04em;color:#a5b4fc}
header.top .title{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
header.top .sub{color:#94a3b8;font-size:12px}
header.top button{font:inherit;font-size:12px;color:#e2e8f0;background:#1e293b;border:1px solid #334155;
border-radius:5px;padding:1px 8px;cursor:pointer}
header.top .filter{margin-left:auto;font-size:12px;color:#cbd5e1;white-space:nowrap}
main{max-width:1120px;margin:0 auto;padding:18px 24px 60px}
h1{font-size:18px;margin:26px 0 10px}
h2{font-size:14px;margin:0 0 8px;display:flex;flex-wrap:wrap;gap:8px;align-items:center}
h2 a{color:var(--ink);text-decoration:none}
h2 .facts{margin-left:auto;color:var(--muted);font-weight:400;font-size:12px}
h2 .model{color:var(--muted);font-weight:400;font-size:12px}
.card,.it{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin:0 0 12px}
.it{content-visibility:auto;contain-intrinsic-size:auto 260px}
.it.bad{border-left:4px solid var(--bad)}
body.only-bad .it:not(.bad){display:none}
.label{font-size:11px;font-weight:600;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:10px 0 4px}
.label .lc{text-transform:none;letter-spacing:0;font-weight:500}
.card>.label:first-child,.it .reply>.label:first-child{margin-top:0}
.result.ok{border-left:4px solid var(--ok)}.result.warn{border-left:4px solid var(--warn)}
.result.bad{border-left:4px solid var(--bad)}
.badge{display:inline-block;font-size:11px;font-weight:600;line-height:18px;padding:0 8px;border-radius:9px;
text-transform:none;letter-spacing:0}
.badge.ok{background:var(--okbg);color:var(--ok)}.badge.warn{background:var(--warnbg);color:var(--warn)}
.badge.bad{background:var(--badbg);color:var(--bad)}
.pill{margin-left:6px;padding:1px 8px;border-radius:9px;text-decoration:none;font-size:12px}
.pill.ok{background:var(--okbg);color:var(--ok)}.pill.warn{background:var(--warnbg);color:var(--warn)}
.pill.bad{background:var(--badbg);color:var(--bad)}
nav.runs{margin:0 0 12px;color:var(--muted)}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:10px 0 0;font-size:13px}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0;overflow-wrap:anywhere}
pre{margin:4px 0;padding:8px 10px;border-radius:6px;font:12.5px/1.45 var(--mono);white-space:pre-wrap;
overflow-wrap:anywhere;tab-size:4}
pre.question,pre.answer,pre.prose{font-family:inherit;font-size:14px;line-height:1.5;background:none;padding:0}
pre.question{font-size:16px;font-weight:600}
pre.answer{font-size:15px}
pre.code{background:#f6f8fa;border:1px solid #eaeef2;color:#1f2328}
pre.out{background:#0f172a;color:#e2e8f0}
pre.err{background:var(--badbg);color:var(--bad)}
pre.preview{margin-bottom:0;border-bottom-left-radius:0;border-bottom-right-radius:0}
pre.preview .more{color:#94a3b8}
details.fold{margin:0 0 6px}
details.fold>summary,details.code-fold>summary{cursor:pointer;color:#0969da;font-size:12px;padding:2px 0}
details.fold[open]>summary{color:var(--muted)}
details.code-fold>summary{color:var(--muted)}
.cell{border-top:1px dashed var(--line);margin-top:10px}
.cell .label{margin-top:8px}
.flag{margin:4px 0;font-weight:600;font-size:13px}.flag.bad{color:var(--bad)}.flag.warn{color:var(--warn)}
.note{margin:6px 0;padding:4px 10px;background:var(--warnbg);color:var(--warn);border-radius:6px;font-size:13px}
.muted,.facts{color:var(--muted)}
p.facts{margin:8px 0 0;font-size:13px}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th{text-align:left;font-weight:600;color:var(--muted);border-bottom:1px solid var(--line);padding:4px 8px}
td{border-bottom:1px solid #eef0f3;padding:4px 8px;vertical-align:top;overflow-wrap:anywhere}
td.bad{color:var(--bad)}
table.subs td:nth-child(n+3):nth-child(-n+6){font-variant-numeric:tabular-nums}
.timeline .bar{display:flex;height:18px;border-radius:5px;overflow:hidden;background:var(--o)}
.seg,.chart span,.legend i{display:block}
.p-model{background:var(--m)}.p-sandbox{background:var(--s)}.p-subcalls{background:var(--x)}
.p-startup{background:var(--u)}.p-other{background:var(--o)}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;margin:8px 0 4px;font-size:12px;color:var(--muted)}
.legend .key{display:flex;align-items:center;gap:6px}.legend i{width:10px;height:10px;border-radius:2px}
.chart{display:flex;align-items:flex-end;gap:2px;height:90px;padding-bottom:1px;
border-bottom:1px solid var(--line)}
.chartbox{margin-top:4px}
.axis-note{font-size:11px;color:var(--muted);margin-top:12px}
.chart.dense{gap:0}
.chart a{flex:1 1 0;min-width:0;height:100%;display:flex;flex-direction:column-reverse}
.chart a:hover{background:#eef2ff}
.chart a.bad{box-shadow:inset 0 -3px 0 var(--bad)}
.chart a span:first-child{border-radius:0}
.axis{display:flex;justify-content:space-between;font-size:11px;color:var(--muted)}
table.queries td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.queries pre{margin:0}
table.queries td.good{color:var(--ok);font-weight:600}table.queries td.poor{color:var(--bad);font-weight:600}
table.queries td a{color:#0969da}
.hl .k{color:#8250df;font-weight:600}.hl .s{color:#0a3069}.hl .c{color:#6e7781;font-style:italic}
.hl .n{color:#0550ae}.hl .b{color:#953800}.hl .f{color:#6639ba;font-weight:600}.hl .d{color:#116329}
"""

JS = r"""
(function () {
  'use strict';
  document.documentElement.setAttribute('data-parsed-ms', performance.now().toFixed(1));
  var DATA = null;
  function data() {
    if (DATA === null) { DATA = JSON.parse(document.getElementById('rlm-data').textContent); }
    return DATA;
  }
  var KW = new Set(('False None True and as assert async await break class continue def del elif else ' +
    'except finally for from global if import in is lambda nonlocal not or pass raise return try while ' +
    'with yield match case').split(' '));
  var BI = new Set(('print len range enumerate zip map filter sorted sum min max abs any all int float str ' +
    'bool list dict set tuple type isinstance open repr round reversed hasattr getattr setattr ' +
    'llm_query llm_query_batched rlm_query FINAL FINAL_VAR SHOW_VARS context re json math collections').split(' '));
  var TOKEN = new RegExp([
    '(#[^\\n]*)',
    '((?:[rRbBuUfF]{1,2})?(?:"{3}[\\s\\S]*?(?:"{3}|$)|\'{3}[\\s\\S]*?(?:\'{3}|$)|' +
      '"(?:[^"\\\\\\n]|\\\\.)*"?|\'(?:[^\'\\\\\\n]|\\\\.)*\'?))',
    '(\\b(?:0[xXoObB][0-9a-fA-F_]+|\\d[\\d_]*(?:\\.\\d*)?(?:[eE][+-]?\\d+)?j?)\\b)',
    '(@[A-Za-z_][\\w.]*)',
    '([A-Za-z_]\\w*)'].join('|'), 'g');
  function span(cls, text) {
    var s = document.createElement('span');
    s.className = cls;
    s.textContent = text;
    return s;
  }
  // Highlight a <pre> by splitting its own text into text nodes and spans (never markup).
  function highlight(pre) {
    var src = pre.textContent, frag = document.createDocumentFragment(), last = 0, prev = '', m, cls;
    TOKEN.lastIndex = 0;
    while ((m = TOKEN.exec(src)) !== null) {
      if (m.index > last) { frag.appendChild(document.createTextNode(src.slice(last, m.index))); }
      cls = m[1] ? 'c' : m[2] ? 's' : m[3] ? 'n' : m[4] ? 'd' : null;
      if (m[5]) {
        cls = KW.has(m[5]) ? 'k' : (prev === 'def' || prev === 'class') ? 'f' : BI.has(m[5]) ? 'b' : null;
        prev = m[5];
      } else { prev = ''; }
      frag.appendChild(cls ? span(cls, m[0]) : document.createTextNode(m[0]));
      last = TOKEN.lastIndex;
    }
    if (last < src.length) { frag.appendChild(document.createTextNode(src.slice(last))); }
    pre.textContent = '';
    pre.appendChild(frag);
  }
  function fill(d) {
    var value = data()[Number(d.getAttribute('data-b'))];
    if (d.getAttribute('data-kind') === 'rows') {
      var table = document.createElement('table'), body = document.createElement('tbody');
      table.className = 'subs';
      value.forEach(function (row) {
        var tr = document.createElement('tr');
        row.forEach(function (cell) {
          var td = document.createElement('td'), text = String(cell);
          if (text.charAt(0) === '!') { td.className = 'bad'; text = text.slice(1); }
          td.textContent = text;
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      table.appendChild(body);
      d.appendChild(table);
      return;
    }
    var pre = document.createElement('pre');
    pre.className = d.getAttribute('data-cls') || 'out';
    pre.textContent = String(value);
    if (pre.classList.contains('hl')) { highlight(pre); }
    d.appendChild(pre);
  }
  document.addEventListener('toggle', function (e) {
    var d = e.target;
    if (!d || d.tagName !== 'DETAILS' || !d.hasAttribute('data-b')) { return; }
    var preview = d.previousElementSibling;
    if (preview && preview.classList.contains('preview')) { preview.hidden = d.open; }
    if (d.open && !d.hasAttribute('data-filled')) { d.setAttribute('data-filled', ''); fill(d); }
  }, true);
  function openAll() {
    var all = document.querySelectorAll('details');
    for (var i = 0; i < all.length; i++) {
      var d = all[i];
      if (d.hasAttribute('data-b') && !d.hasAttribute('data-filled')) { d.setAttribute('data-filled', ''); fill(d); }
      var preview = d.previousElementSibling;
      if (d.hasAttribute('data-b') && preview && preview.classList.contains('preview')) { preview.hidden = true; }
      d.open = true;
    }
  }
  var button = document.getElementById('open-all');
  if (button) { button.addEventListener('click', openAll); }
  // The first blocks are highlighted now, the others when they come near the viewport.
  var pres = document.querySelectorAll('pre.hl'), EAGER = 40;
  var observer = ('IntersectionObserver' in window && location.hash !== '#open-all') ?
    new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { observer.unobserve(entry.target); highlight(entry.target); }
      });
    }, {rootMargin: '800px 0px'}) : null;
  for (var i = 0; i < pres.length; i++) {
    if (i < EAGER || observer === null) { highlight(pres[i]); } else { observer.observe(pres[i]); }
  }
  var only = document.getElementById('only-bad');
  if (only) { only.addEventListener('change', function () { document.body.classList.toggle('only-bad', only.checked); }); }
  if (location.hash === '#open-all') { openAll(); }
  document.body.getBoundingClientRect();
  document.documentElement.setAttribute('data-ready-ms', performance.now().toFixed(1));
})();
"""

__all__ = ["CSS", "JS"]
