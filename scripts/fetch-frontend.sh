#!/usr/bin/env bash
# Fetches the pinned ComfyUI web frontend (comfyui-frontend-package from PyPI)
# into ./frontend/, unless it is already there. The server serves
# frontend/comfyui_frontend_package/static as its web root.
#
#   scripts/fetch-frontend.sh [VERSION [DEST]]
#
# Another VERSION into another DEST is how scripts/check-frontend.sh tries
# a newer frontend without touching the pinned one.
#
# With the pinned frontend come what ComfyUI v0.33.0 serves beside it, at
# the versions it pins: the official template gallery
# (comfyui-workflow-templates 0.11.41, its bundles laid out as ComfyUI's
# asset map resolves them, each file's SHA-256 checked against the
# manifest but for the indexes) into frontend/workflow_templates/, and the node documentation
# (comfyui-embedded-docs 0.5.9) into frontend/embedded_docs/. About 500 MB.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${1:-1.48.7}
DEST=${2:-frontend}
PY=$(command -v python3 || command -v python) || { echo "python3 with pip is needed to fetch the frontend" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# pip download --no-deps of each requirement into $tmp/wheels, unpacked
# together into $tmp/site.
fetch_wheels() {
  mkdir -p "$tmp/wheels" "$tmp/site"
  "$PY" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/wheels" "$@"
  for wheel in "$tmp"/wheels/*.whl; do
    "$PY" -m zipfile -e "$wheel" "$tmp/site"
  done
}

if [ ! -f "$DEST/comfyui_frontend_package/static/index.html" ] || [ ! -d "$DEST/comfyui_frontend_package-$VERSION.dist-info" ]; then
  echo "Fetching comfyui-frontend-package==$VERSION from PyPI..." >&2
  "$PY" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "comfyui-frontend-package==$VERSION"
  wheel=$(ls "$tmp"/comfyui_frontend_package-"$VERSION"-*.whl)
  rm -rf "$DEST.partial"
  "$PY" -m zipfile -e "$wheel" "$DEST.partial"
  # Keep what an earlier run fetched beside it.
  for kept in workflow_templates embedded_docs; do
    [ -d "$DEST/$kept" ] && mv "$DEST/$kept" "$DEST.partial/$kept"
  done
  rm -rf "$DEST"
  mv "$DEST.partial" "$DEST"
  echo "Frontend $VERSION ready in $DEST/comfyui_frontend_package/static" >&2
fi

[ "$DEST" = frontend ] || exit 0

TEMPLATES_VERSION=0.11.41
if [ "$(cat frontend/workflow_templates/.version 2>/dev/null)" != "$TEMPLATES_VERSION" ]; then
  echo "Fetching comfyui-workflow-templates==$TEMPLATES_VERSION (the official template gallery, ~440 MB) from PyPI..." >&2
  rm -rf "$tmp/wheels" "$tmp/site"
  # The bundles comfyui-workflow-templates 0.11.41 requires, exactly.
  fetch_wheels comfyui-workflow-templates-core==0.3.312 comfyui-workflow-templates-json==0.1.47 \
    comfyui-workflow-templates-media-api==0.3.84 comfyui-workflow-templates-media-video==0.3.101 \
    comfyui-workflow-templates-media-image==0.3.160 comfyui-workflow-templates-media-other==0.3.229 \
    comfyui-workflow-templates-media-assets-01==0.1.28
  rm -rf frontend/workflow_templates.partial
  mkdir -p frontend/workflow_templates.partial
  "$PY" - "$tmp/site" frontend/workflow_templates.partial <<'PY'
# ComfyUI's FrontendManager.template_asset_map: every asset of every
# template in the manifest, found where comfyui_workflow_templates_core's
# get_asset_path finds it (.json files in the json package, the rest in
# their bundle's package), a later entry replacing an earlier one.
import hashlib, json, os, shutil, sys
site, out = sys.argv[1], sys.argv[2]
bundles = {
    "media-api": "comfyui_workflow_templates_media_api",
    "media-video": "comfyui_workflow_templates_media_video",
    "media-image": "comfyui_workflow_templates_media_image",
    "media-other": "comfyui_workflow_templates_media_other",
    "media-assets-01": "comfyui_workflow_templates_media_assets_01",
}
manifest = json.load(open(f"{site}/comfyui_workflow_templates_core/manifest.json"))
count = 0
for entry in manifest["templates"]:
    for asset in entry["assets"]:
        name = asset["filename"]
        package = ("comfyui_workflow_templates_json" if name.endswith(".json")
                   else bundles[asset.get("bundle") or entry["bundle"]])
        source = f"{site}/{package}/templates/{name}"
        with open(source, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        # The indexes are rewritten after the manifest is made (all 13 of
        # 0.11.41 differ from it); every other file must match.
        is_index = name.startswith("index") and name.endswith(".json")
        if digest != asset["sha256"] and not is_index:
            sys.exit(f"{source}: SHA-256 {digest}, the manifest says {asset['sha256']}")
        target = os.path.join(out, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
        count += 1
print(f"{count} template files", file=sys.stderr)
PY
  echo "$TEMPLATES_VERSION" >frontend/workflow_templates.partial/.version
  rm -rf frontend/workflow_templates
  mv frontend/workflow_templates.partial frontend/workflow_templates
fi

DOCS_VERSION=0.5.9
if [ "$(cat frontend/embedded_docs/.version 2>/dev/null)" != "$DOCS_VERSION" ]; then
  echo "Fetching comfyui-embedded-docs==$DOCS_VERSION (node documentation) from PyPI..." >&2
  rm -rf "$tmp/wheels" "$tmp/site"
  fetch_wheels "comfyui-embedded-docs==$DOCS_VERSION"
  rm -rf frontend/embedded_docs
  mv "$tmp/site/comfyui_embedded_docs/docs" frontend/embedded_docs.partial
  echo "$DOCS_VERSION" >frontend/embedded_docs.partial/.version
  mv frontend/embedded_docs.partial frontend/embedded_docs
fi
