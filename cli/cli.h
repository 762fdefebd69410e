/* cli.h: the rnnc subcommands. Each takes (argc, argv) with argv[0] the
 * command's name and returns the exit status: EXIT_OK, EXIT_BAD_INPUT
 * (graph, data, checkpoint) or EXIT_USAGE. */
#ifndef RNNC_CLI_H
#define RNNC_CLI_H

#include <stdint.h>

/* Prints "rnnc CMD: <message>" and a pointer to --help; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int cmd_compile(int argc, char **argv);
extern const char compile_usage[];

#endif
