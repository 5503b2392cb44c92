/* main.c - placeholder until the command line lands. */
#include <stdio.h>
int main(void)
{
	puts("handoffd " HANDOFFD_VERSION);
	return 0;
}
