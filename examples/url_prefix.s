# A URL filter: the input memory is a request path (r1 = bytes, r2 = length).
# r0 = 0 accepts a path under /api/; anything else is refused with 403.
mov %r0, 403
jlt %r2, 5, done
ldxw %r3, [%r1]          # the first four bytes, little-endian
jne32 %r3, 0x6970612f, done   # "/api"
ldxb %r3, [%r1+4]
jne %r3, 0x2f, done      # "/"
mov %r0, 0
done:
exit
