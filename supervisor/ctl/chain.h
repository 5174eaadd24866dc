/* chain.h: farmctl's local commands on chain data. */
#ifndef FARMD_CTL_CHAIN_H
#define FARMD_CTL_CHAIN_H

/* farmctl chain generate ARGS (argv after "generate"); returns the exit code. */
int chain_generate(int argc, char **argv);

#endif
