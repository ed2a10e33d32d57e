// Removes devDependencies from a copied node_modules using package-lock.json, with node alone
// (the locally built base image has no npm). Run from the app directory.
import { readFileSync, rmSync } from 'node:fs';

const lock = JSON.parse(readFileSync('package-lock.json', 'utf8'));
let removed = 0;
for (const [path, meta] of Object.entries(lock.packages ?? {})) {
  if (path.startsWith('node_modules/') && meta.dev === true) {
    rmSync(path, { recursive: true, force: true });
    removed++;
  }
}
console.log(`pruned ${removed} dev packages`);
