# Shared by the install scripts: where pinned tools are cached, and how one is installed there atomically.
#
# The cache is $SYNTHESIS_CACHE_DIR, else $XDG_CACHE_HOME/synthesis-bridge, else ~/.cache/synthesis-bridge.
# Each tool lives in a directory named after its exact version; a directory that exists is complete,
# because it is filled beside its final place and moved in only once the install has succeeded.

cache=${SYNTHESIS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/synthesis-bridge}

# install_into DIR COMMAND...: unless DIR exists, runs COMMAND with the staging directory as its last
# argument, then moves the staging directory to DIR. COMMAND's output goes to standard error.
install_into() {
    local dir=$1
    shift
    [[ -d $dir ]] && return 0
    echo "installing $(basename "$dir") into $(dirname "$dir")" >&2
    mkdir -p "$(dirname "$dir")"
    local staging
    staging=$(mktemp -d "$(dirname "$dir")/.$(basename "$dir").XXXXXX")
    # An interrupted install leaves nothing behind.
    trap "rm -rf '$staging'" EXIT
    if ! "$@" "$staging" >&2; then
        rm -rf "$staging"
        trap - EXIT
        echo "installing $(basename "$dir") failed" >&2
        return 1
    fi
    # Another run sharing the cache may have finished the same install meanwhile: then its copy stays.
    mv -T "$staging" "$dir" 2>/dev/null || rm -rf "$staging"
    trap - EXIT
}

# npm_into SPEC... DIR: npm installs the packages SPEC... under DIR/node_modules.
npm_into() {
    local dir=${*: -1}
    command -v npm >/dev/null || { echo "npm is needed to install ${*:1:$#-1}" >&2; return 1; }
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "${@:1:$#-1}"
}

# pip_into SPEC... DIR: pip installs the Python packages SPEC... into DIR (for PYTHONPATH); no venv needed.
pip_into() {
    local dir=${*: -1}
    python3 -m pip install --target "$dir" --quiet --disable-pip-version-check --no-input \
        --no-warn-conflicts --root-user-action=ignore \
        "${@:1:$#-1}"
}

# package_version PACKAGE_JSON: the version an installed npm package says it is.
package_version() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$1"
}
