// Parsing what people type into number and list fields: a wrong text is an error to show, never silently replaced.

export function parseSeeds(text) {
  const out = [];
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const m = part.match(/^(\d+)(?:-(\d+))?$/);
    if (!m) throw new Error(`seeds: "${part}" is not a seed; write numbers like 0, 1, 2 or a range 0-4`);
    const [a, b] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (b < a || b - a > 99) throw new Error(`seeds: range ${part} must go up and hold at most 100 seeds`);
    for (let s = a; s <= b; s++) if (!out.includes(s)) out.push(s);
  }
  return out;
}

const INT = /^[+-]?\d+$/;
const FLOAT = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** {value} for a valid number text of `type` ("int" | "float"), else {error}: the message to show. */
export function parseNumber(text, type) {
  const t = String(text).trim();
  if (type === "int") {
    if (!INT.test(t)) return { error: `“${t}” is not a whole number (e.g. 16)` };
    return { value: Number(t) };
  }
  if (!FLOAT.test(t) || !Number.isFinite(Number(t))) return { error: `“${t}” is not a number (e.g. 0.001 or 1e-3)` };
  return { value: Number(t) };
}

/** A comma-separated list of sweep values: numbers stay numbers, true/false booleans, the rest strings. */
export function parseValues(text) {
  return text.split(",").map((x) => x.trim()).filter(Boolean).map((x) => {
    if (/^(true|false)$/i.test(x)) return x.toLowerCase() === "true";
    if (FLOAT.test(x)) return Number(x);
    return x;
  });
}
