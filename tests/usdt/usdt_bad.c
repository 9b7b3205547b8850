// SPDX-License-Identifier: MIT
// A binary whose only USDT note has a malformed argument spec ("3@%edi": 3 bytes is no
// argument size), written by hand as <sys/sdt.h> would lay the note out.
int main(void) {
    __asm__ volatile("990: nop\n"
                     ".pushsection .note.stapsdt,\"?\",\"note\"\n"
                     ".balign 4\n"
                     ".4byte 992f-991f, 994f-993f, 3\n"
                     "991: .asciz \"stapsdt\"\n"
                     "992: .balign 4\n"
                     "993: .8byte 990b\n"
                     ".8byte 0\n"
                     ".8byte 0\n"
                     ".asciz \"bpftime_test\"\n"
                     ".asciz \"bad\"\n"
                     ".asciz \"-4@%edi 3@%esi\"\n"
                     "994: .balign 4\n"
                     ".popsection\n");
    return 0;
}
