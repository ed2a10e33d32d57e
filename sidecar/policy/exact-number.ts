// What "an exact number" means, for agent requests (strict JSON) and for policy files (YAML) alike.
//
// A decimal literal is exact when the double it parses to prints back as the same decimal: 0.1 and 9007199254740992
// are, 9007199254740993 (read as ...992) and 100.0000000000000001 (read as 100) are not. 0.1 is no more a binary
// fraction than 100.0000000000000001 is; what matters is that the number written and the number judged are one
// and the same decimal, so that a policy bound and the value another program reads at full precision (a Python or
// Go hook, a Decimal in a tool) agree on every comparison. Both sides use this one test, so that a number a policy
// may name is always a number a request may carry.

/** `digits@exponent` of a decimal literal, value 0.digits × 10^exponent, without sign, leading or trailing zeros. */
function decimalKey(literal: string): string {
  let t = literal.replace(/^[-+]/, '');
  let exponent = 0;
  const e = t.search(/[eE]/);
  if (e >= 0) {
    exponent = Number(t.slice(e + 1));
    t = t.slice(0, e);
  }
  const dot = t.indexOf('.');
  const whole = dot >= 0 ? t.slice(0, dot) : t;
  let digits = whole + (dot >= 0 ? t.slice(dot + 1) : '');
  exponent += whole.length;
  const lead = digits.length - digits.replace(/^0+/, '').length;
  digits = digits.slice(lead).replace(/0+$/, '');
  return digits === '' ? '0' : `${digits}@${exponent - lead}`;
}

/**
 * True when a finite decimal literal (`-12`, `+.5`, `1.0e3`) is exactly the decimal JavaScript prints for the
 * double it parses to. The literal must already be a well-formed decimal number.
 */
export function isExactDecimal(literal: string): boolean {
  return decimalKey(literal) === decimalKey(String(Math.abs(Number(literal))));
}
