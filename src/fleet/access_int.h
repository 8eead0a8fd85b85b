/* access_int.h - who may do what, shared by the lifecycle files of src/fleet (ownership,
 * revocation). Not for use outside src/fleet. */
#ifndef CF_FLEET_ACCESS_INT_H
#define CF_FLEET_ACCESS_INT_H

#include "fleet/ownership.h"

/* CF_OK when p's role is at least need (admin > operator > auditor); else CF_ERR_POLICY
 * naming what (the operation) and the role it needs. */
cf_err cf_fleet_check_role(const cf_principal *p, cf_role need, const char *what, cf_error *err);

/* The vendor's own principal (no owner scope) with at least role need. */
cf_err cf_fleet_check_vendor(const cf_principal *p, cf_role need, const char *what, cf_error *err);

#endif
