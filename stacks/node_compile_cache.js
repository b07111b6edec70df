'use strict';
// V8 code cache for the CommonJS modules jsii's node process loads (aws-cdk-lib, cdk-nag, ...),
// preloaded with `node --require` by stacks/synth_process.py.
//
// Node >= 22.1 caches compiled modules itself when NODE_COMPILE_CACHE names a directory; this file
// then does nothing. On older Node (20 here) it does the same for CommonJS: each module's code
// cache is kept under $NODE_COMPILE_CACHE/v<V8 version>/<sha1 of the source>, read when the module
// is compiled and written when the process exits, so it also holds the functions compiled lazily
// while the module ran. Half of a synth's node time was compiling 24 MB of JavaScript.
//
// The key is the source itself, not its path: jsii loads every package from a fresh temporary
// directory per process. V8 refuses a cache made by another V8 version or flag set
// (`cachedDataRejected`); the module is then compiled from source and its cache rewritten. A
// directory that cannot be written only costs the speed-up, never the synth.

const Module = require('module');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const vm = require('vm');

const DYNAMIC_IMPORT = /\bimport\s*\(/;

function install(directory) {
  const root = path.join(directory, `v${process.versions.v8}`);
  try {
    fs.mkdirSync(root, { recursive: true });
  } catch {
    return;
  }
  const toWrite = [];
  const compileFromSource = Module.prototype._compile;

  Module.prototype._compile = function compileWithCodeCache(content, filename) {
    if (
      typeof content !== 'string' ||
      typeof filename !== 'string' ||
      !filename.endsWith('.js') ||
      // vm.Script on Node 20 cannot run import() as a module would; node compiles those itself.
      (content.includes('import') && DYNAMIC_IMPORT.test(content))
    ) {
      return compileFromSource.call(this, content, filename);
    }
    // A leading hashbang is legal only at the very start of a script, not inside the wrapper.
    const source = content.startsWith('#!') ? `//${content.slice(2)}` : content;
    const file = path.join(root, crypto.createHash('sha1').update(source).digest('hex'));
    let cachedData;
    try {
      cachedData = fs.readFileSync(file);
    } catch {
      cachedData = undefined;
    }
    const script = new vm.Script(Module.wrap(source), { filename, cachedData });
    if (cachedData === undefined || script.cachedDataRejected) {
      toWrite.push([script, file]);
    }
    const module = this;
    const require = (id) => module.require(id);
    require.resolve = (request, options) => Module._resolveFilename(request, module, false, options);
    require.resolve.paths = (request) => Module._resolveLookupPaths(request, module);
    require.main = process.mainModule;
    require.extensions = Module._extensions;
    require.cache = Module._cache;
    const wrapper = script.runInThisContext({ displayErrors: true });
    return wrapper.call(module.exports, module.exports, require, module, filename, path.dirname(filename));
  };

  process.once('exit', () => {
    for (const [script, file] of toWrite) {
      const partial = `${file}.${process.pid}`;
      try {
        fs.writeFileSync(partial, script.createCachedData());
        fs.renameSync(partial, file);
      } catch {
        // Another process may have written it; a missing entry only costs a compile next time.
      }
    }
  });
}

const directory = process.env.NODE_COMPILE_CACHE;
if (directory && typeof Module.enableCompileCache !== 'function') {
  install(directory);
}
