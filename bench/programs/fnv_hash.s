# FNV-1a 64-bit hash of the input memory (r1 = data, r2 = length).
lddw %r0, 0xcbf29ce484222325
lddw %r3, 0x100000001b3
mov %r4, %r1
add %r4, %r2
loop:
jge %r1, %r4, done
ldxb %r5, [%r1]
xor %r0, %r5
mul %r0, %r3
add %r1, 1
ja loop
done:
exit
