# Sourced by the scripts that must run one at a time (provision.sh, client-venv.sh,
# build-node-image.sh). Needs log/die defined by the caller.
#
#   exec 9<>"$FILE"                        # <>: open without truncating (the file names the holder)
#   take_lock 9 "$FILE" "what it guards" [TIMEOUT_SECONDS]
#
# Waits for the lock and says so: which lock, who holds it (the holder writes its pid and command
# into the file), and every 30 s that it still waits. Once taken, writes our own pid and command
# there for the next one to read.
take_lock() {
    local fd=$1 file=$2 what=$3 timeout=${4:-1800} start=$SECONDS waited=0 holder parent
    if ! flock -n "$fd"; then
        holder=$(head -c 400 "$file" 2>/dev/null | tr '\n' ' ')
        holder=${holder% }
        log "waiting for the lock $file (${what}); held by ${holder:-a process that did not say who it is}"
        until flock -w "$((timeout - waited < 30 ? timeout - waited : 30))" "$fd"; do
            waited=$((SECONDS - start))
            ((waited < timeout)) || die "the lock $file was not free within ${timeout}s; its holder: ${holder:-unknown}"
            log "still waiting for $file after ${waited}s"
        done
        log "got the lock $file after $((SECONDS - start))s"
    fi
    parent=$(ps -o args= -p "$PPID" 2>/dev/null | cut -c1-120)
    # Through the path, not the fd: this truncates the same file, which we now hold.
    printf 'pid %s (%s, started by %s) since %s\n' "$$" "$0" "${parent:-?}" "$(date '+%F %T')" >"$file"
}
