# Sieve of Eratosthenes in the input memory, one byte per number: r0 = primes below length.
# Clears the memory first (length must be a multiple of 8).
mov %r3, 0
clear:
jge %r3, %r2, sieve
mov %r4, %r1
add %r4, %r3
stdw [%r4], 0
add %r3, 8
ja clear
sieve:
mov %r0, 0
mov %r3, 2
outer:
jge %r3, %r2, done
mov %r4, %r1
add %r4, %r3
ldxb %r5, [%r4]
jne %r5, 0, next
add %r0, 1
mov %r6, %r3
mul %r6, %r3
inner:
jge %r6, %r2, next
mov %r4, %r1
add %r4, %r6
stb [%r4], 1
add %r6, %r3
ja inner
next:
add %r3, 1
ja outer
done:
exit
