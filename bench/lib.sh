# Shared by bench/http and bench/scale (sourced, not run).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# fill_tokens DB_URL N: N live and N expired pre_auth rows in the token table, by SQL, then
# VACUUM ANALYZE and a CHECKPOINT, so that what is measured next is the table at that size
# and not the server still writing out the load (the schema must be migrated).
fill_tokens() {
    local db_url=$1 n=$2 age
    for age in 1 -1; do  # hours from now: live, then expired
        psql "$db_url" -qc "INSERT INTO auth_ephemeral_tokens (token_hash, token_type, username, sealed, expires_at, created_at) SELECT sha256(int8send(g * $age)), 'pre_auth', 'u' || g, '\\x00', now() + $age * interval '1 hour', now() FROM generate_series(1, $n) g"
    done
    psql "$db_url" -qc "VACUUM ANALYZE auth_ephemeral_tokens"
    psql "$db_url" -qc "CHECKPOINT"
}

# wait_ready URL LOG: until URL/readyz answers, or shows LOG and fails.
wait_ready() {
    for _ in $(seq 300); do curl -sf "$1/readyz" >/dev/null && return; sleep 0.1; done
    cat "$2" >&2; echo "the worker did not start" >&2; exit 1
}
