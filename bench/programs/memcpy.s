# Copies the first half of the input memory to the second half, 8 bytes at a time.
# r0 = bytes copied.
mov %r3, %r2
rsh %r3, 1
mov %r4, %r1
add %r4, %r3
mov %r5, %r1
add %r5, %r3
loop:
jge %r1, %r5, done
ldxdw %r0, [%r1]
stxdw [%r4], %r0
add %r1, 8
add %r4, 8
ja loop
done:
mov %r0, %r3
exit
