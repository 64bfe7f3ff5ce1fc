#!/usr/bin/env perl
# The Perl example's task handler: the same job as examples/python-app/tasks.py, in Perl.
#
# Two ways to run it (surge's command handler modes):
#   per-task     perl process_image.pl              payload JSON on stdin, result JSON on stdout;
#                                                   exit 0 ok, 100 bad payload (never retried),
#                                                   1 any other failure (retried)
#   persistent   perl process_image.pl --persistent (or SURGE_PERSISTENT=1): one request per
#                line {"id","task","payload"}, one response per line {"id","ok":true,"result"}
#                or {"id","ok":false,"error","permanent"}; exits when stdin closes.
use strict;
use warnings;
use JSON::XS ();
use Digest::SHA qw(sha256_hex);
use MIME::Base64 qw(decode_base64);

my $JSON = JSON::XS->new->utf8->canonical;
my $PERMANENT_EXIT = 100;

# A failure no retry can fix.
sub bad_input { die { permanent => 1, error => $_[0] } }

sub dimension {
    my ($payload, $key, $default, $minimum) = @_;
    $minimum //= 1;
    my $value = exists $payload->{$key} ? $payload->{$key} : $default;
    bad_input("$key must be an integer >= $minimum")
        unless defined $value && !ref $value && $value =~ /^\d+$/ && $value >= $minimum;
    bad_input("$key must be at most 4096") if ($key eq 'width' || $key eq 'height') && $value > 4096;
    return 0 + $value;
}

sub thumbnail_size {
    my ($width, $height, $box) = @_;
    return ($width, $height) if $width <= $box && $height <= $box;
    return ($box, max1(int($height * $box / $width))) if $width >= $height;
    return (max1(int($width * $box / $height)), $box);
}

sub max1 { $_[0] < 1 ? 1 : $_[0] }

sub process_image {
    my ($payload) = @_;
    bad_input("payload must be a JSON object") unless ref $payload eq 'HASH';
    my $width  = dimension($payload, 'width', 64);
    my $height = dimension($payload, 'height', 48);
    my $box    = dimension($payload, 'thumbnail', 128);
    my $pixels;
    if (exists $payload->{image}) {
        my $image = $payload->{image};
        bad_input("image must be a base64 string") if ref $image || !defined $image;
        bad_input("image is not valid base64") unless $image =~ m{^[A-Za-z0-9+/]*={0,2}$};
        $pixels = decode_base64($image);
        bad_input("image is empty") unless length $pixels;
        bad_input("image has " . length($pixels) . " bytes, expected width*height = "
            . $width * $height) unless length($pixels) == $width * $height;
    }
    else {
        my $seed = dimension($payload, 'seed', 0, 0);
        my $ramp = pack('C*', map { (7 * $_ + $seed) % 256 } 0 .. 255);
        my $count = $width * $height;
        $pixels = substr($ramp x (int($count / 256) + 1), 0, $count);
    }
    my $sum = unpack('%64C*', $pixels);
    my ($thumb_width, $thumb_height) = thumbnail_size($width, $height, $box);
    return {
        width     => $width,
        height    => $height,
        bytes     => length $pixels,
        sha256    => sha256_hex($pixels),
        mean      => int($sum / length $pixels),
        thumbnail => { width => $thumb_width, height => $thumb_height },
    };
}

sub run_persistent {
    $| = 1;
    while (my $line = <STDIN>) {
        next unless $line =~ /\S/;
        my $request = eval { $JSON->decode($line) };
        my $id = ref $request eq 'HASH' ? $request->{id} : undef;
        my $response;
        if (!defined $id) {
            $response = { id => undef, ok => JSON::XS::false, error => "bad request line",
                          permanent => JSON::XS::true };
        }
        else {
            my $result = eval { process_image($request->{payload}) };
            if (my $error = $@) {
                my $permanent = ref $error eq 'HASH' && $error->{permanent};
                my $text = ref $error eq 'HASH' ? $error->{error} : "$error";
                $text =~ s/\s+$//;
                print STDERR "process_image $id failed: $text\n";
                $response = { id => $id, ok => JSON::XS::false, error => $text,
                              permanent => $permanent ? JSON::XS::true : JSON::XS::false };
            }
            else {
                $response = { id => $id, ok => JSON::XS::true, result => $result };
            }
        }
        print $JSON->encode($response), "\n";
    }
}

sub run_per_task {
    local $/;
    my $input = <STDIN>;
    my $result = eval { process_image($JSON->decode($input // '')) };
    if (my $error = $@) {
        if (ref $error eq 'HASH' && $error->{permanent}) {
            print STDERR "process_image: $error->{error}\n";
            exit $PERMANENT_EXIT;
        }
        my $text = ref $error eq 'HASH' ? $error->{error} : "$error";
        print STDERR "process_image: $text";
        exit 1;
    }
    print $JSON->encode($result), "\n";
    exit 0;
}

if ((grep { $_ eq '--persistent' } @ARGV) || $ENV{SURGE_PERSISTENT}) {
    run_persistent();
}
else {
    run_per_task();
}
