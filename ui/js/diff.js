// A word-level difference of two generated texts (longest common subsequence), for showing
// the old and new outputs side by side with what changed marked.

const MAX_CELLS = 250000;

export function wordDiff(a, b) {
  const x = tokens(a), y = tokens(b);
  if (x.length * y.length > MAX_CELLS) return { old: [{ text: a, changed: a !== b }], new: [{ text: b, changed: a !== b }] };
  const n = x.length, m = y.length;
  const table = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      table[i][j] = x[i] === y[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const old = [], neu = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { old.push({ text: x[i], changed: false }); neu.push({ text: y[j], changed: false }); i++; j++; }
    else if (table[i + 1][j] >= table[i][j + 1]) old.push({ text: x[i++], changed: true });
    else neu.push({ text: y[j++], changed: true });
  }
  while (i < n) old.push({ text: x[i++], changed: true });
  while (j < m) neu.push({ text: y[j++], changed: true });
  return { old: merge(old), new: merge(neu) };
}

function tokens(s) {
  return (s || "").match(/\s+|[^\s]+/g) || [];
}

function merge(parts) {
  const out = [];
  for (const p of parts) {
    const last = out[out.length - 1];
    if (last && last.changed === p.changed) last.text += p.text;
    else out.push({ ...p });
  }
  return out;
}
