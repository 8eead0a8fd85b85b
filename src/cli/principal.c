/* principal.c - who a command acts as (see principal.h). */
#include <stdio.h>
#include <string.h>

#include "cli/principal.h"

int cli_principal(cli *c, cf_principal *p)
{
    const char *owner = cli_opt(c, "as-owner"), *role = cli_opt(c, "as-role");
    p->actor = c->actor;
    p->owner_id = 0;
    p->role = CF_ROLE_ADMIN;
    if (role && !owner)
        return cli_usage(c, "--as-role needs --as-owner");
    if (!owner)
        return 0;
    if (role) {
        int r = cf_role_parse(role);
        if (r < 0)
            return cli_usage(c, "--as-role %s: expected admin, operator or auditor", role);
        p->role = (cf_role)r;
    }
    cf_owner_rec o = {0};
    if (cf_store_owner_get(cf_fleet_store(c->fleet), owner, &o, &c->err) != CF_OK)
        return cli_fail(c);
    p->owner_id = o.id;
    cf_owner_rec_clear(&o);
    /* The audit log names both: the person at the keyboard and the owner acted for. */
    char actor[sizeof c->actor];
    int n = snprintf(actor, sizeof actor, "%s as owner:%s", c->actor, owner);
    if (n < 0 || (size_t)n >= sizeof actor) {
        cf_error_set(&c->err, CF_ERR_INVALID, "--as-owner %.40s: name too long", owner);
        return cli_fail(c);
    }
    memcpy(c->actor, actor, (size_t)n + 1);
    return 0;
}
