# The Perl example app: a plain PSGI application, run by Starman (see surge.toml).
#   GET /      a page
#   GET /echo  the request headers it received, as JSON (shows what the gateway adds)
use strict;
use warnings;
use JSON::XS ();

my $json = JSON::XS->new->canonical->utf8;

my $page = <<'HTML';
<!doctype html>
<html><head><meta charset="utf-8"><title>surge Perl example</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><h1>Hello from the surge Perl example</h1>
<p>This page came from Starman; <code>POST /images</code> is queued for a Perl worker.</p>
</body></html>
HTML

my $app = sub {
    my ($env) = @_;
    my $path = $env->{PATH_INFO} || '/';
    if ($path eq '/') {
        return [200, ['Content-Type' => 'text/html; charset=utf-8'], [$page]];
    }
    if ($path eq '/echo') {
        my %headers;
        for my $key (keys %$env) {
            next unless $key =~ /^HTTP_(.+)$/;
            (my $name = lc $1) =~ tr/_/-/;
            $headers{$name} = $env->{$key};
        }
        $headers{'content-type'}   = $env->{CONTENT_TYPE}   if defined $env->{CONTENT_TYPE};
        $headers{'content-length'} = $env->{CONTENT_LENGTH} if defined $env->{CONTENT_LENGTH};
        my $body = $json->encode({
            method  => $env->{REQUEST_METHOD},
            path    => $path,
            query   => $env->{QUERY_STRING} // '',
            headers => \%headers,
            pid     => $$,
        });
        return [200, ['Content-Type' => 'application/json'], [$body]];
    }
    return [404, ['Content-Type' => 'text/plain; charset=utf-8'], ["not found\n"]];
};

$app;
