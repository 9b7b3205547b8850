# Compares the NUL-terminated strings at the start and at the middle of the input memory.
# r0 = 0 when equal, else the difference of the first differing bytes.
mov %r3, %r2
rsh %r3, 1
mov %r4, %r1
add %r4, %r3
loop:
ldxb %r5, [%r1]
ldxb %r6, [%r4]
jne %r5, %r6, differ
jeq %r5, 0, same
add %r1, 1
add %r4, 1
ja loop
same:
mov %r0, 0
exit
differ:
mov %r0, %r5
sub %r0, %r6
exit
