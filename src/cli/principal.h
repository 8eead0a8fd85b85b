/* principal.h - who a command acts as: the vendor's operator, or (--as-owner) one owner,
 * the way an API call made with that owner's token will be scoped. */
#ifndef CF_CLI_PRINCIPAL_H
#define CF_CLI_PRINCIPAL_H

#include "cli/cli.h"
#include "fleet/ownership.h"

/* The options every scoped command takes (place inside its cli_opt_spec list). */
/* clang-format off */
#define CLI_PRINCIPAL_OPTS                                                                     \
    {"as-owner", "NAME", "act as owner NAME: see and change only its devices (as its token)"}, \
    {"as-role", "ROLE", "with --as-owner: the token's role: admin (default), operator, auditor"}
/* clang-format on */

/* Fills p from --as-owner/--as-role (the vendor's admin when absent); p->actor points into
 * c. Returns 0, or the exit code after printing why not. */
int cli_principal(cli *c, cf_principal *p);

#endif
