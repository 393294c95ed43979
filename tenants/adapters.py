from allauth.account.adapter import DefaultAccountAdapter


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        # People join a tenant by invitation (tenants.views.invitation_accept);
        # operators onboard tenants. There is no anonymous self-service signup.
        return False
