#!/usr/bin/env bash
# Start-up of the worker container (the image's ENTRYPOINT; arguments go to the handler).
#
#  0. The worker's settings, workflow and graphs are checked (worker.preflight): a misconfigured endpoint
#     stops here, exit code 2.
#  1. ComfyUI starts headless on 127.0.0.1 and, at the same time, download_models.py puts the model files
#     in place (the two do not depend on each other: ComfyUI re-reads its model folders when they change).
#  2. Once ComfyUI answers GET /system_stats (within COMFY_READY_TIMEOUT_S) AND the download succeeded,
#     handler.py starts: no job is taken before both, so the boot is never billed to a job.
#  3. From then on, if ComfyUI dies the container exits non-zero with ComfyUI's last log lines, so RunPod
#     replaces the worker; when the handler exits, the container exits with its code.
# SIGTERM/SIGINT are forwarded to every process. Output of each process is prefixed: [comfyui], [models],
# [worker]; this script's own lines are [entrypoint], including a start-up timeline.
#
# Every command and path can be overridden by environment variables (the tests run this script with
# small stand-ins): see the defaults below and docs/deploy.md.
set -uo pipefail

START_US=${EPOCHREALTIME/[.,]/}

PYTHON=${PYTHON:-python}
APP_DIR=${APP_DIR:-/app}
COMFY_DIR=${COMFY_DIR:-/comfyui}
# ComfyUI listens on COMFY_PORT; COMFY_URL follows it. The configuration check below refuses a COMFY_URL
# on another port, which would otherwise wait COMFY_READY_TIMEOUT_S for a ComfyUI that is not there.
COMFY_PORT=${COMFY_PORT:-8188}
COMFY_URL=${COMFY_URL:-http://127.0.0.1:${COMFY_PORT}}
COMFY_INPUT_DIR=${COMFY_INPUT_DIR:-${COMFY_DIR}/input}
COMFY_OUTPUT_DIR=${COMFY_OUTPUT_DIR:-${COMFY_DIR}/output}
COMFY_MODELS_DIR=${COMFY_MODELS_DIR:-${COMFY_DIR}/models}
COMFY_LOG_FILE=${COMFY_LOG_FILE:-/tmp/comfyui.log}
COMFY_EXTRA_ARGS=${COMFY_EXTRA_ARGS:-}
COMFY_READY_TIMEOUT_S=${COMFY_READY_TIMEOUT_S:-600}
COMFY_LOG_TAIL_LINES=${COMFY_LOG_TAIL_LINES:-40}
ENABLE_SAGE_ATTENTION=${ENABLE_SAGE_ATTENTION:-0}
MODEL_MANIFEST=${MODEL_MANIFEST:-${APP_DIR}/models/manifest.json}
READY_POLL_S=${READY_POLL_S:-1}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-20}
HANDLER_READY_PATTERN=${HANDLER_READY_PATTERN:-Starting Serverless Worker}
COMFY_CMD=${COMFY_CMD:-${PYTHON} -u ${COMFY_DIR}/main.py}
DOWNLOAD_CMD=${DOWNLOAD_CMD:-${PYTHON} -u ${APP_DIR}/download_models.py}
HANDLER_CMD=${HANDLER_CMD:-${PYTHON} -u ${APP_DIR}/handler.py}
PREFLIGHT_CMD=${PREFLIGHT_CMD:-}
export COMFY_PORT COMFY_URL COMFY_INPUT_DIR COMFY_OUTPUT_DIR COMFY_MODELS_DIR

COMFY_PID=""
DOWNLOAD_PID=""
HANDLER_PID=""
LOG_STREAM_PID=""
T_MODELS="?"
T_COMFY="?"

log() { printf '[entrypoint] %s\n' "$*"; }

now_us() { printf '%s' "${EPOCHREALTIME/[.,]/}"; }

# Seconds since this script started, with one decimal.
elapsed() {
    local us=$(($(now_us) - START_US))
    printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}

# Each line with a tag in front; ANSI colour codes (ComfyUI colours its level tags) are dropped.
shopt -s extglob
prefix() {
    local tag=$1 line
    while IFS= read -r line || [[ -n $line ]]; do
        printf '[%s] %s\n' "$tag" "${line//$'\e['*([0-9;])m/}"
    done
}

# The handler's output, prefixed; its first line matching HANDLER_READY_PATTERN completes the timeline.
handler_output() {
    local line ready=0
    while IFS= read -r line || [[ -n $line ]]; do
        printf '[worker] %s\n' "$line"
        if ((!ready)) && [[ $line == *"${HANDLER_READY_PATTERN}"* ]]; then
            ready=1
            log "start-up timeline (seconds since the container started): models ready ${T_MODELS}," \
                "ComfyUI ready ${T_COMFY}, handler ready $(elapsed)"
        fi
    done
}

is_true() { [[ ${1,,} =~ ^(1|true|yes|on)$ ]]; }

alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

# sleep that lets a trap run at once
pause() {
    sleep "$1" &
    wait $!
}

fail() {
    log "ERROR: $*"
    stop_all
    exit 1
}

stop_log_stream() {
    # tail --pid ends by itself within a second of ComfyUI's exit; wait for that so no line is lost.
    local i
    for ((i = 0; i < 30; i++)); do
        alive "$LOG_STREAM_PID" || return 0
        alive "$COMFY_PID" && break
        pause 0.1
    done
    alive "$LOG_STREAM_PID" && kill "$LOG_STREAM_PID" 2>/dev/null
    return 0
}

# TERM to every process still running, KILL to those still there after STOP_TIMEOUT_S.
stop_all() {
    local pid pids=() deadline
    for pid in "$HANDLER_PID" "$DOWNLOAD_PID" "$COMFY_PID"; do
        if alive "$pid"; then
            pids+=("$pid")
            kill -TERM "$pid" 2>/dev/null
        fi
    done
    deadline=$(($(now_us) + STOP_TIMEOUT_S * 1000000))
    for pid in "${pids[@]}"; do
        while alive "$pid" && (($(now_us) < deadline)); do
            pause 0.1
        done
        if alive "$pid"; then
            log "process $pid ignored SIGTERM for ${STOP_TIMEOUT_S} s: killing it"
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    stop_log_stream
}

# shellcheck disable=SC2329  # called by the traps below
on_signal() {
    trap - TERM INT
    log "received SIG$1: stopping ComfyUI, the model download and the worker"
    stop_all
    if [[ $1 == TERM ]]; then exit 143; else exit 130; fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

comfy_died() {
    local code=$1 when=$2
    stop_log_stream
    log "ERROR: ComfyUI exited (code ${code}) ${when}. Its last ${COMFY_LOG_TAIL_LINES} log lines:"
    tail -n "$COMFY_LOG_TAIL_LINES" "$COMFY_LOG_FILE" | prefix 'comfyui last lines'
    log "exiting non-zero so that RunPod replaces this worker"
    stop_all
    exit 1
}

comfy_answers() { curl -fsS -o /dev/null --max-time 5 "${COMFY_URL}/system_stats" 2>/dev/null; }

# The worker's settings, its workflow with its WAN_* settings and MODEL_VARIANT's model file, and every
# graph it builds are checked before anything starts (python -m worker.preflight, no network): a
# misconfigured endpoint fails in a second, not after a 30 GB download. The message names every problem
# and never shows a secret's value.
check_configuration() {
    local out cmd=("$PYTHON" -m worker.preflight)
    [[ -n $PREFLIGHT_CMD ]] && read -r -a cmd <<<"$PREFLIGHT_CMD"
    if out=$("${cmd[@]}" 2>&1); then
        [[ -z $out ]] || log "${out##*$'\n'}"
        return 0
    fi
    log "ERROR: the worker's configuration is invalid; nothing started: ${out##*$'\n'}"
    exit 2
}

# --use-sage-attention only when asked for (ENABLE_SAGE_ATTENTION=1 or ATTENTION_BACKEND=sage: only this
# start flag can switch ComfyUI to sage) AND the package imports; a missing optional package never
# stops the worker (the attention node then falls back and says so in each result).
sage_attention_flag() {
    local asked_by
    if is_true "$ENABLE_SAGE_ATTENTION"; then
        asked_by="ENABLE_SAGE_ATTENTION=${ENABLE_SAGE_ATTENTION}"
    elif [[ ${ATTENTION_BACKEND:-auto} == sage ]]; then
        asked_by="ATTENTION_BACKEND=sage"
    else
        return 1
    fi
    local error
    if error=$("$PYTHON" -c 'import sageattention' 2>&1); then
        log "sage attention: enabled (${asked_by}, sageattention imports)"
        return 0
    fi
    log "WARNING: ${asked_by} but sageattention does not import" \
        "(${error##*$'\n'}); ComfyUI starts without --use-sage-attention"
    return 1
}

# ---------------------------------------------------------------------------------------------------

[[ $COMFY_READY_TIMEOUT_S =~ ^[0-9]+$ ]] || {
    log "ERROR: COMFY_READY_TIMEOUT_S must be a whole number of seconds, got '${COMFY_READY_TIMEOUT_S}'"
    exit 2
}
[[ $STOP_TIMEOUT_S =~ ^[0-9]+$ ]] || {
    log "ERROR: STOP_TIMEOUT_S must be a whole number of seconds, got '${STOP_TIMEOUT_S}'"
    exit 2
}
command -v curl >/dev/null || {
    log "ERROR: curl is required for the ComfyUI readiness probe"
    exit 2
}
cd "$APP_DIR" || exit 2
mkdir -p "$COMFY_INPUT_DIR" "$COMFY_OUTPUT_DIR" "$COMFY_MODELS_DIR" "$(dirname "$COMFY_LOG_FILE")" || exit 2
check_configuration

read -r -a comfy_cmd <<<"$COMFY_CMD"
read -r -a comfy_extra <<<"$COMFY_EXTRA_ARGS"
read -r -a download_cmd <<<"$DOWNLOAD_CMD"
read -r -a handler_cmd <<<"$HANDLER_CMD"

comfy_args=(--disable-auto-launch --listen 127.0.0.1 --port "$COMFY_PORT"
    --input-directory "$COMFY_INPUT_DIR" --output-directory "$COMFY_OUTPUT_DIR")
if sage_attention_flag; then
    comfy_args+=(--use-sage-attention)
fi
comfy_args+=("${comfy_extra[@]}")

# ComfyUI writes to its own log file (so its last lines are at hand if it dies); tail streams it to stdout.
: >"$COMFY_LOG_FILE"
log "starting ComfyUI: ${comfy_cmd[*]} ${comfy_args[*]}"
"${comfy_cmd[@]}" "${comfy_args[@]}" >>"$COMFY_LOG_FILE" 2>&1 &
COMFY_PID=$!
tail -n +1 -F --pid="$COMFY_PID" --sleep-interval=0.5 "$COMFY_LOG_FILE" 2>/dev/null > >(prefix comfyui) &
LOG_STREAM_PID=$!

log "downloading models into ${COMFY_MODELS_DIR} while ComfyUI boots"
"${download_cmd[@]}" --models-dir "$COMFY_MODELS_DIR" --manifest "$MODEL_MANIFEST" > >(prefix models) 2>&1 &
DOWNLOAD_PID=$!

deadline_us=$(($(now_us) + COMFY_READY_TIMEOUT_S * 1000000))
models_ready=0
comfy_ready=0
while :; do
    if ! alive "$COMFY_PID"; then
        wait "$COMFY_PID"
        comfy_died $? "while booting"
    fi
    if ((!models_ready)) && ! alive "$DOWNLOAD_PID"; then
        wait "$DOWNLOAD_PID"
        code=$?
        ((code == 0)) || fail "the model download failed (exit code ${code}); see the [models] lines above"
        models_ready=1
        T_MODELS=$(elapsed)
        log "models ready after ${T_MODELS} s"
    fi
    if ((!comfy_ready)); then
        if comfy_answers; then
            comfy_ready=1
            T_COMFY=$(elapsed)
            log "ComfyUI ready after ${T_COMFY} s (${COMFY_URL}/system_stats answers)"
            ((models_ready)) || log "waiting for the model download to finish"
        elif (($(now_us) >= deadline_us)); then
            stop_log_stream
            log "ERROR: ComfyUI not ready after ${COMFY_READY_TIMEOUT_S} s (COMFY_READY_TIMEOUT_S);" \
                "${COMFY_URL}/system_stats never answered. Its last ${COMFY_LOG_TAIL_LINES} log lines:"
            tail -n "$COMFY_LOG_TAIL_LINES" "$COMFY_LOG_FILE" | prefix 'comfyui last lines'
            fail "giving up on ComfyUI"
        fi
    fi
    ((models_ready && comfy_ready)) && break
    pause "$READY_POLL_S"
done

log "starting the worker: ${handler_cmd[*]}${*:+ $*}"
"${handler_cmd[@]}" "$@" > >(handler_output) 2>&1 &
HANDLER_PID=$!

wait -n -p exited_pid "$COMFY_PID" "$HANDLER_PID"
code=$?
if [[ ${exited_pid:-} == "$COMFY_PID" ]]; then
    comfy_died "$code" "while the worker was running"
fi
log "the worker exited with code ${code}; stopping ComfyUI"
stop_all
exit "$code"
