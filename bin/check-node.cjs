'use strict';
// easel runs its TypeScript sources directly on Node's type stripping, on by default from Node 22.18
// (and 23.6). On an older Node the first .ts import fails with ERR_UNKNOWN_FILE_EXTENSION, which says
// nothing about the cause, so every entry point (bin/easel.js, and npm's preinstall, prestart,
// pretest and preeasel scripts) runs this first. It must itself run on old Node: plain CommonJS,
// nothing newer than ES5 plus what Node 4 already had.
//
//   node bin/check-node.cjs     exits 1 with one line on stderr when this Node is too old

var NEEDED = '>= 22.18';

function parse(version) {
  var m = /^v?(\d+)\.(\d+)/.exec(String(version));
  return m ? { major: Number(m[1]), minor: Number(m[2]) } : { major: 0, minor: 0 };
}

/** Whether this Node version strips types by default (22.18+, 23.6+, 24+). */
function supported(version) {
  var v = parse(version);
  if (v.major >= 24) return true;
  if (v.major === 23) return v.minor >= 6;
  if (v.major === 22) return v.minor >= 18;
  return false;
}

/** The one line that says what was found, what is needed and how to get it. */
function message(version, platform, arch) {
  var found = String(version).charAt(0) === 'v' ? String(version) : 'v' + version;
  var line =
    'easel needs Node.js ' + NEEDED + ' (it targets 24 LTS) but this is ' + found + '. Get Node 24 from https://nodejs.org, ' +
    'or with nvm (nvm install 24), fnm (fnm install 24) or volta (volta install node@24)';
  // The npm route .ci/run takes: Node itself as an npm package, no root and no version manager needed.
  if (platform === 'linux' && (arch === 'x64' || arch === 'arm64')) {
    var pkg = 'node-linux-' + arch;
    line += ', or from npm: npm install --prefix ~/.cache/easel-node24 ' + pkg + '@24 && export PATH=~/.cache/easel-node24/node_modules/' + pkg + '/bin:$PATH';
  } else {
    line += '.';
  }
  return line;
}

/** True when this Node can run easel; otherwise writes the one line to stderr and returns false. */
function check(version, platform, arch) {
  version = version || process.version;
  if (supported(version)) return true;
  process.stderr.write(message(version, platform || process.platform, arch || process.arch) + '\n');
  return false;
}

module.exports = { supported: supported, message: message, check: check, NEEDED: NEEDED };

if (require.main === module && !check()) process.exit(1);
