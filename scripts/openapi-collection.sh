#!/usr/bin/env bash
# Writes docs/sourcegram.postman_collection.json, a Postman collection (v2.1) of
# the three hosts' requests, from their OpenAPI documents (docs/openapi/*.json),
# with the npm package openapi-to-postmanv2 (installed once, at the version
# pinned below, into ~/.cache/sourcegram/npm; node and npm from Debian's
# packages if missing). Run it again whenever a document changes.
#
# The collection has a folder per host and these variables: commandUrl,
# queryUrl, projectionUrl (the default loopback ports), token (a user token:
# command-host mint-token alice) and adminToken (the projection host's
# ADMIN_TOKEN). Requests take their values from the documents' examples.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
version=6.3.3
prefix="${SOURCEGRAM_CACHE_DIR:-$HOME/.cache/sourcegram}/npm"
say() { printf 'openapi-collection: %s\n' "$*" >&2; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "installing node and npm"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
installed=$(node -p "require('$prefix/node_modules/openapi-to-postmanv2/package.json').version" 2>/dev/null || true)
if [[ "$installed" != "$version" ]]; then
  say "installing openapi-to-postmanv2 $version into $prefix"
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --silent "openapi-to-postmanv2@$version" >/dev/null
fi

out="$root/docs/sourcegram.postman_collection.json"
NODE_PATH="$prefix/node_modules" node - "$root/docs/openapi" "$out" <<'EOF'
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const converter = require('openapi-to-postmanv2');

const [dir, out] = process.argv.slice(2);
const hosts = [
  { name: 'command-host', variable: 'commandUrl', url: 'http://127.0.0.1:8081', token: 'token' },
  { name: 'query-host', variable: 'queryUrl', url: 'http://127.0.0.1:8082', token: 'token' },
  { name: 'projection-host', variable: 'projectionUrl', url: 'http://127.0.0.1:8083', token: 'adminToken' },
];
const options = {
  folderStrategy: 'Tags',
  parametersResolution: 'Example',
  requestNameSource: 'Fallback',
  enableOptionalParameters: false,
  includeAuthInfoInExample: false,
  indentCharacter: 'Space',
};

// A UUID made from a name, so that the file only changes when the documents do.
function stableId(name) {
  const h = crypto.createHash('sha256').update(name).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

// Replaces the converter's random ids and its per-document variable names.
function rewrite(node, host, trail) {
  if (Array.isArray(node)) return node.map((item, i) => rewrite(item, host, `${trail}/${i}`));
  if (node === null || typeof node !== 'object') {
    return typeof node === 'string'
      ? node.replaceAll('{{baseUrl}}', `{{${host.variable}}}`).replaceAll('{{bearerToken}}', `{{${host.token}}}`)
      : node;
  }
  const copy = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === 'id' && typeof value === 'string' && /^[0-9a-f-]{36}$/.test(value)) {
      copy.id = stableId(`${trail}/${node.name || ''}`);
    } else {
      copy[key] = rewrite(value, host, `${trail}/${key}`);
    }
  }
  return copy;
}

// The converter fills requests from schema-level examples only: give each
// parameter's schema the parameter's example, and each request body the first
// of its examples, so that requests carry the documents' values.
function withRequestExamples(doc) {
  const parameters = Object.values(doc.components.parameters || {});
  for (const item of Object.values(doc.paths)) {
    for (const operation of Object.values(item)) {
      parameters.push(...(operation.parameters || []).filter((p) => !p.$ref));
      const media = operation.requestBody && operation.requestBody.content['application/json'];
      if (media && media.examples && media.example === undefined) {
        media.example = Object.values(media.examples)[0].value;
        delete media.examples;
      }
    }
  }
  for (const parameter of parameters) {
    if (parameter.example !== undefined && !parameter.schema.$ref) {
      parameter.schema = { ...parameter.schema, example: parameter.example };
    }
  }
  // It reads the `example` of OpenAPI 3.0 rather than the `examples` list of 3.1.
  (function singular(node) {
    if (Array.isArray(node)) return node.forEach(singular);
    if (node === null || typeof node !== 'object') return;
    if (Array.isArray(node.examples) && node.example === undefined) node.example = node.examples[0];
    Object.values(node).forEach(singular);
  })(doc.components.schemas);
  return doc;
}

// Operations that need no token say so, rather than inheriting the folder's.
function publicOperations(doc) {
  const names = new Set();
  for (const item of Object.values(doc.paths)) {
    for (const operation of Object.values(item)) {
      if (Array.isArray(operation.security) && operation.security.length === 0) names.add(operation.summary);
    }
  }
  return names;
}

function markPublic(items, names) {
  for (const item of items) {
    if (item.item) markPublic(item.item, names);
    else if (names.has(item.name)) item.request.auth = { type: 'noauth' };
  }
}

function convert(host) {
  const doc = withRequestExamples(JSON.parse(fs.readFileSync(path.join(dir, `${host.name}.json`), 'utf8')));
  host.public = publicOperations(doc);
  const data = JSON.stringify(doc);
  return new Promise((resolve, reject) => {
    converter.convertV2({ type: 'string', data }, options, (error, result) => {
      if (error) return reject(error);
      if (!result.result) return reject(new Error(`${host.name}: ${result.reason}`));
      resolve(result.output[0].data);
    });
  });
}

(async () => {
  const folders = [];
  for (const host of hosts) {
    const collection = await convert(host);
    markPublic(collection.item, host.public);
    folders.push(rewrite({
      name: host.name,
      description: collection.info.description,
      item: collection.item,
      // Each folder authenticates with its host's token; public requests opt out.
      auth: { type: 'bearer', bearer: [{ key: 'token', value: `{{${host.token}}}`, type: 'string' }] },
    }, host, host.name));
  }
  const collection = {
    info: {
      _postman_id: stableId('sourcegram'),
      name: 'Sourcegram',
      description: 'The HTTP API of Sourcegram\'s three hosts, generated from docs/openapi/*.json by '
        + 'scripts/openapi-collection.sh. Set `token` to a user token (command-host mint-token alice) '
        + 'and `adminToken` to the projection host\'s ADMIN_TOKEN.',
      schema: 'https://schema.getpostman.com/json/collection/v2.1.0/collection.json',
    },
    item: folders,
    variable: [
      ...hosts.map((h) => ({ key: h.variable, value: h.url, type: 'string' })),
      { key: 'token', value: '', type: 'string' },
      { key: 'adminToken', value: '', type: 'string' },
    ],
  };
  fs.writeFileSync(out, JSON.stringify(collection, null, 2) + '\n');
  console.error(`openapi-collection: wrote ${path.relative(process.cwd(), out)}`);
})().catch((error) => {
  console.error(`openapi-collection: ${error.stack || error}`);
  process.exit(1);
});
EOF
