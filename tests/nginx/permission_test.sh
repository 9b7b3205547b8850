#!/usr/bin/env bash
# A segment the workers may not open (made by root with mode 0600, as before --shm-group): every
# filtered request gets the fail policy and the error log says once, in each worker, that it is a
# permission problem (the segment's owner, group and mode, the worker's user, the fix), never
# that the segment does not exist. `bpftime segment chgrp` fixes it under the running nginx.
# Also the command line's side: --shm-group and segment chgrp/chmod refuse bad input, and a user
# without access gets the same kind of message.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
if [[ $NGX_USER != www-data ]]; then
  echo "SKIP: needs root and the user www-data"
  exit 77
fi
group=$BPFTIME_SHM_GROUP

# Bad input first: nothing is created.
expect "an unknown --shm-group" 1 "--shm-group: no group named 'no-such-group-x'" \
  -- "$BPFTIME" --shm-group no-such-group-x load "$TEST_BPF/status_codes.bpf.o"
expect "an unknown BPFTIME_SHM_GROUP" 1 "BPFTIME_SHM_GROUP: no group named 'no-such-group-x'" \
  -- env BPFTIME_SHM_GROUP=no-such-group-x "$BPFTIME" load "$TEST_BPF/status_codes.bpf.o"
check "no segment was created by them" test ! -e "/dev/shm/$BPFTIME_SHM"
expect "segment info without a segment" 1 "no segment named $BPFTIME_SHM" \
  -- "$BPFTIME" segment info
expect "chgrp without a segment" 1 "no segment named $BPFTIME_SHM" \
  -- "$BPFTIME" segment chgrp "$group"

# The segment as root made it before: 0600, root's group.
(unset BPFTIME_SHM_GROUP; load_object "$TEST_BPF/status_codes.bpf.o"; attach_prog "${PROG[status_codes]}")
check "the segment is root's, 0600" test "$(stat -c '%U %G %a' "/dev/shm/$BPFTIME_SHM")" == "root root 600"
expect "a group-configured command notes the mismatch" 0 \
  "note: segment $BPFTIME_SHM is group root with mode 0600: processes of group $group cannot use it \(\`bpftime segment chgrp $group\`" \
  -- "$BPFTIME" list

ngx_start 1 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        location / { empty_gif; }
        location /open/ { bpftime_fail open; empty_gif; }
    }'
many 40 "$WORK/denied" /legal /ok /open/legal /open/ok
expect_tally "a segment the worker may not open: the fail policy" "$WORK/denied" "10 /legal 503
10 /ok 503
10 /open/legal 200
10 /open/ok 200"
sleep 1.2 # past the server's once-a-second look at the segment: a second look logs nothing new
many 8 "$WORK/denied2" /legal
msg="segment $BPFTIME_SHM: permission denied: this process \(user www-data \(uid [0-9]+\), group $group \(gid [0-9]+\)\) may not read and write it \(owner root, uid 0, group root, gid 0, mode 0600\).*--shm-group $group load .*segment chgrp $group"
check "the permission problem is logged once: $(error_log_count "permission denied") time(s)" \
  test "$(error_log_count "$msg")" -eq 1 -a "$(error_log_count "permission denied")" -eq 1
check "and not as a missing segment" test "$(error_log_count 'does not exist')" -eq 0

# The fix, with nginx running: the worker opens it at its next look (about once a second).
expect "segment chgrp" 0 "^segment $BPFTIME_SHM: group $group, mode 0660$" \
  -- "$BPFTIME" segment chgrp "$group"
wait_code 451 /legal
expect_code 200 /ok
expect "segment info after chgrp" 0 "group $group \(gid [0-9]+\), mode 0660" \
  -- "$BPFTIME" segment info
expect "segment info --json" 0 "\"owner\":\"root\",\"uid\":0,\"group\":\"$group\",\"gid\":[0-9]+,\"mode\":\"0660\"" \
  -- "$BPFTIME" --json segment info

# Bad modes and groups for the commands that change access; nothing changes.
expect "chmod 0666" 1 "mode 0666 is not one a segment may have" -- "$BPFTIME" segment chmod 0666
expect "chmod 0700" 1 "mode 0700 is not one" -- "$BPFTIME" segment chmod 0700
expect "chmod 0460" 1 "mode 0460 is not one" -- "$BPFTIME" segment chmod 0460
expect "chmod not octal" 1 "mode '9x' is not an octal mode" -- "$BPFTIME" segment chmod 9x
expect "chgrp to an unknown group" 1 "no group named 'no-such-group-x'" \
  -- "$BPFTIME" segment chgrp no-such-group-x
check "the segment kept group $group and mode 0660" \
  test "$(stat -c '%G %a' "/dev/shm/$BPFTIME_SHM")" == "$group 660"

# Without the group configured, root's commands refuse a segment its group can write, naming
# the way to accept it.
expect "no group configured" 1 "its group $group \(gid [0-9]+\) can write it and no group was configured.*--shm-group GROUP or BPFTIME_SHM_GROUP" \
  -- env -u BPFTIME_SHM_GROUP "$BPFTIME" list
expect "another group configured" 1 "the configured group is root \(gid 0\)" \
  -- "$BPFTIME" --shm-group root list

# A user outside the group: the same permission message, with the command line's fix.
if id nobody >/dev/null 2>&1 && setpriv --help >/dev/null 2>&1 &&
  setpriv --reuid nobody --regid nogroup --init-groups test -x "$BPFTIME"; then
  expect "a user without access" 1 "permission denied: this process \(user nobody .*mode 0660\).*bpftime segment chgrp GROUP" \
    -- setpriv --reuid nobody --regid nogroup --init-groups env -u BPFTIME_SHM_GROUP "$BPFTIME" list
fi

# chmod 0600 takes the workers' access away again: the fail policy, logged once more.
expect "segment chmod 0600" 0 "^segment $BPFTIME_SHM: mode 0600$" -- "$BPFTIME" segment chmod 0600
ngx_reload
wait_code 503 /legal
check "the new worker logs the permission problem" \
  test "$(error_log_count "permission denied: .*mode 0600")" -eq 2
check_no_crash
finish
